"""The content-addressed cache of step results, shared by every recipe and output folder.

Every entry is a folder named by its step id (converter/plan.py) holding the step's files and `meta.json`: the
step, its JSON record and the sha256 of every file. An entry is written into a temporary folder while its lock
is held and renamed into place only when complete, so an interrupted or concurrent run never takes half an
entry as done; before reuse its files are checked against their recorded hashes, so a file edited in place is
recomputed rather than trusted.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

META = "meta.json"
CACHE_ENV = "CONVERT_CACHE_DIR"


def default_root() -> Path:
    """$CONVERT_CACHE_DIR, else $XDG_CACHE_HOME/convert, else ~/.cache/convert."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "convert"


def hash_path(path: Path) -> str:
    """Hash of a file's or folder's contents (relative names and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but meta.json, by relative path."""
    hashes = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META):
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        hashes[str(file.relative_to(folder))] = digest.hexdigest()
    return hashes


@dataclass(frozen=True)
class Entry:
    """A finished cache entry."""

    id: str
    path: Path
    record: dict[str, Any]  # what the step returned
    meta: dict[str, Any]


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._verified: set[str] = set()

    def path(self, entry_id: str) -> Path:
        return self.root / entry_id

    def has(self, entry_id: str) -> bool:
        return (self.path(entry_id) / META).is_file()

    def get(self, entry_id: str) -> Optional[Entry]:
        """The entry, if it exists and its files still have the hashes recorded when it was made."""
        meta_path = self.path(entry_id) / META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        if entry_id not in self._verified:
            if file_hashes(self.path(entry_id)) != meta.get("files", {}):
                return None
            self._verified.add(entry_id)
        return Entry(entry_id, self.path(entry_id), meta.get("record", {}), meta)

    def modified(self, entry_id: str) -> bool:
        """An entry exists whose files no longer match their recorded hashes (edited or corrupted in place)."""
        return self.has(entry_id) and self.get(entry_id) is None

    @contextlib.contextmanager
    def lock(self, entry_id: str) -> Iterator[None]:
        """Hold the entry's lock, waiting for another process that holds it (it is computing the same step)."""
        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{entry_id}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def create(self, entry_id: str, step: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (temporary folder, record dict) to fill; on success write meta.json and rename into place.

        Call with the entry's lock held. An existing entry (a --force recompute, or one found modified) is
        replaced: it is renamed away first, so a reader never sees a mixture of the two.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{entry_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        record: dict[str, Any] = {}
        try:
            yield tmp, record
            meta = {"id": entry_id, "step": step, "record": record, "files": file_hashes(tmp), "created": time.time()}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=_plain))
            final = self.path(entry_id)
            if final.exists():
                old = self.root / f".old-{entry_id}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
            self._verified.add(entry_id)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def forget(self, entry_id: str) -> None:
        self._verified.discard(entry_id)
        shutil.rmtree(self.path(entry_id), ignore_errors=True)

    def clean_temporaries(self) -> None:
        """Remove leftovers of interrupted runs: temporary folders whose entry no process is computing."""
        if not self.root.exists():
            return
        for leftover in list(self.root.glob(".tmp-*")) + list(self.root.glob(".old-*")):
            entry_id = leftover.name.split("-", 1)[1].rsplit("-", 1)[0]
            handle = open(self.root / ".locks" / f"{entry_id}.lock", "a+") if (self.root / ".locks").exists() else None
            try:
                if handle is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(leftover, ignore_errors=True)
            except BlockingIOError:
                pass  # another run is writing it right now
            finally:
                if handle is not None:
                    handle.close()

    # -- management (convert cache info / prune) ----------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every finished entry: id, kind, label, bytes, created, last used."""
        rows = []
        if not self.root.exists():
            return rows
        for folder in sorted(self.root.iterdir()):
            meta_path = folder / META
            if folder.name.startswith(".") or not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            rows.append({"id": folder.name, "kind": meta.get("step", {}).get("kind", folder.name.split("-")[0]),
                         "label": meta.get("step", {}).get("label", ""), "bytes": size,
                         "created": meta.get("created"), "used": meta_path.stat().st_mtime})
        return rows

    def touch(self, entry_id: str) -> None:
        """Record a use of the entry (for prune's least-recently-used order)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(entry_id) / META)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
