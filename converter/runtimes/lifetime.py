"""Child processes that die with the Python process that started them.

`subprocess.Popen(..., **die_with_parent())` makes the kernel send SIGKILL to the child when its parent
dies (Linux `prctl(PR_SET_PDEATHSIG)`), so a `kill -9` of the parent leaves no Node runner or browser
driver behind. Elsewhere it is a no-op: the drivers also exit when their stdin closes.

Caveat of PR_SET_PDEATHSIG: "parent" is the *thread* that forked the child, so a runtime must be
opened on a thread that outlives it (the main thread, or a worker thread that stays for the run).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not between fork and exec
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent() -> dict[str, Any]:
    """Popen keywords that tie the child's life to this process (empty where the OS has no such call)."""
    if _PRCTL is None:
        return {}
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:  # runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the call above took effect
            os._exit(1)

    return {"preexec_fn": preexec}
