"""`convert cache info` and `convert cache prune`: the shared step cache, summarized and trimmed."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional

from converter.errors import UserError
from converter.store import Store


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


def info(store: Store) -> str:
    entries = store.entries()
    by_kind: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        by_kind[entry["kind"]].append(entry["bytes"])
    lines = [f"cache: {store.root}", f"entries: {len(entries)}, {_size(sum(e['bytes'] for e in entries))}"]
    lines += [f"  {kind:8} {len(sizes):5} entries  {_size(sum(sizes))}" for kind, sizes in sorted(by_kind.items())]
    return "\n".join(lines) + "\n"


def prune(store: Store, older_than_days: Optional[float], max_size: Optional[str], everything: bool) -> str:
    """Remove entries; returns a one-line account. Entries in use by a running step are locked and skipped."""
    if not (everything or older_than_days is not None or max_size):
        raise UserError("cache prune: say what to remove: --all, --older-than-days N or --max-size SIZE")
    entries = sorted(store.entries(), key=lambda e: e["used"])  # least recently used first
    doomed: list[dict] = []
    if everything:
        doomed = entries
    else:
        if older_than_days is not None:
            cutoff = time.time() - older_than_days * 86400
            doomed = [e for e in entries if e["used"] < cutoff]
        if max_size:
            limit = _parse_size(max_size)
            kept = [e for e in entries if e not in doomed]
            total = sum(e["bytes"] for e in kept)
            for entry in kept:
                if total <= limit:
                    break
                doomed.append(entry)
                total -= entry["bytes"]
    freed = 0
    for entry in doomed:
        with store.lock(entry["id"]):
            store.forget(entry["id"])
        freed += entry["bytes"]
    return f"removed {len(doomed)} of {len(entries)} entries, {_size(freed)} freed"


def _parse_size(text: str) -> int:
    from pydantic_core import PydanticCustomError

    from converter.recipe.types import parse_size

    try:
        return parse_size(text)
    except PydanticCustomError as error:
        raise UserError(f"--max-size: {error}") from None
