"""What the user sees while a run goes: one line per step, with elapsed time, on stderr (rich)."""
from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.markup import escape


class LogEvents:
    """Executor events as log lines: the plan's size, each step's own messages, and every failure."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def planned(self, steps, cached) -> None:
        self.log(f"{len(steps)} steps, {len(cached)} cached")

    def started(self, step) -> None:
        pass

    def finished(self, outcome) -> None:
        if outcome.error and not outcome.error.startswith("not run:"):
            self.log(f"{outcome.step.label}: FAILED: {outcome.error}")


class ProgressLog:
    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.started = time.perf_counter()
        self._status = None

    def __enter__(self) -> "ProgressLog":
        if self.console.is_terminal:
            self._status = self.console.status("starting")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s[/dim] {escape(message)}", markup=True)
        if self._status is not None:
            self._status.update(message)
