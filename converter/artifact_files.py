"""Artifact files on disk: sizes, gzip sizes and hashes."""
from __future__ import annotations

import gzip
import hashlib
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
