"""Artifact files on disk: sizes, gzip sizes, hashes, and putting a finished artifact in place atomically."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from converter.store import META


def artifact_files(folder: Path) -> list[Path]:
    """Every file of an artifact (for TF.js: model.json plus every shard), in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META)


def describe_files(folder: Path) -> dict[str, Any]:
    """Per-file bytes, gzip bytes and sha256, plus totals and one sha256 over the whole artifact."""
    files = []
    overall = hashlib.sha256()
    for path in artifact_files(folder):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        rel = str(path.relative_to(folder))
        overall.update(rel.encode() + b"\0" + sha.encode())
        files.append({"path": rel, "size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9, mtime=0)), "sha256": sha})
    return {
        "files": files,
        "size_bytes": sum(f["size_bytes"] for f in files),
        "gzip_bytes": sum(f["gzip_bytes"] for f in files),
        "sha256": overall.hexdigest(),
    }


def place(source: Path, target: Path) -> None:
    """Make `target` a copy of `source` (hard links where possible), replacing it atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        shutil.copytree(source, tmp, copy_function=link, ignore=shutil.ignore_patterns(META))
        old = None
        if target.exists():
            old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(artifacts_dir: Path, keep: set[str]) -> None:
    """Drop artifact folders the recipe no longer names, and leftovers of interrupted runs."""
    if not artifacts_dir.exists():
        return
    for child in artifacts_dir.iterdir():
        if child.name.startswith((".tmp-", ".old-")) or (child.is_dir() and child.name not in keep):
            shutil.rmtree(child, ignore_errors=True)
