"""Content-addressed store of stage outputs, artifacts and evaluations.

Every entry is a folder named by its id = hash(kind, config, parent ids, input contents). An entry is
written into a temporary folder and renamed into place only when complete, so an interrupted run never
leaves something a later run takes as done.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

META = "meta.json"


def make_id(kind: str, *parts: Any) -> str:
    """A short stable id for `kind` over JSON-serialisable parts."""
    text = json.dumps([kind, *parts], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def hash_path(path: Path) -> str:
    """Hash of a file's or folder's contents (names and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, entry_id: str) -> Path:
        return self.root / entry_id

    def has(self, entry_id: str) -> bool:
        return (self.path(entry_id) / META).exists()

    def meta(self, entry_id: str) -> dict[str, Any]:
        return json.loads((self.path(entry_id) / META).read_text())

    def forget(self, entry_id: str) -> None:
        shutil.rmtree(self.path(entry_id), ignore_errors=True)

    @contextlib.contextmanager
    def create(self, entry_id: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (temporary folder, meta dict); on success write meta.json and rename into place."""
        tmp = self.root / f".tmp-{entry_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        meta: dict[str, Any] = {"id": entry_id}
        try:
            yield tmp, meta
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            final = self.path(entry_id)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_temporaries(self) -> None:
        """Remove leftovers of interrupted runs."""
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def put_json(self, entry_id: str, data: dict[str, Any]) -> None:
        with self.create(entry_id) as (_, meta):
            meta.update(data)

    def get_json(self, entry_id: str) -> Optional[dict[str, Any]]:
        return self.meta(entry_id) if self.has(entry_id) else None
