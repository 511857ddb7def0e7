"""One `convert run` per output folder at a time."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from converter.errors import RunLocked


@contextlib.contextmanager
def hold(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on out_dir; refuse at once when another run holds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir / ".lock"
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLocked(f"{out_dir}: another convert run (pid {holder}) is writing this output folder; "
                            "wait for it or pass a different --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
