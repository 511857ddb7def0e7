"""What the user sees while a run goes.

On a terminal: a progress bar whose total counts every step, with the time left estimated from measured step
times (this run's, and earlier runs' kept beside the cache), the current step and training epoch on the bar, and
a line that stays for each stage, each failed export and each check's verdict. Elsewhere (a pipe, CI, `--json`):
the same as plain lines. TensorFlow's and the converters' own output goes to convert.log (NativeOutput).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

# Seconds a step of each kind takes when nothing better is known (measured on the flagship, 2 cores).
DEFAULT_SECONDS = {"source": 6.0, "data": 1.0, "stage": 60.0, "outputs": 3.0, "export": 8.0, "check": 4.0,
                   "latency": 4.0}
_EPOCHS: list[Callable[[int, int, dict[str, float]], None]] = []


def report_epoch(epoch: int, epochs: int, logs: dict[str, float]) -> None:
    """Called by training at the end of every epoch (converter.stages.fit)."""
    for listener in _EPOCHS:
        listener(epoch, epochs, logs)


class LogEvents:
    """Executor events as log lines, for the Python API: each step's own messages, and every failure."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def planned(self, steps, cached) -> None:
        self.log(f"{len(steps)} steps, {len(cached)} cached")

    def started(self, step) -> None:
        pass

    def finished(self, outcome) -> None:
        if outcome.error and not outcome.error.startswith("not run:"):
            self.log(f"{outcome.step.label}: FAILED: {outcome.error}")


class Durations:
    """How long steps took before (kept as .durations.json beside the cache), to estimate the time left."""

    def __init__(self, cache_root: Optional[Path]):
        self.path = cache_root / ".durations.json" if cache_root else None
        self.known: dict[str, float] = {}
        if self.path and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):
                self.known = json.loads(self.path.read_text())

    def estimate(self, step) -> float:
        return self.known.get(step.label) or self.known.get(step.kind) or DEFAULT_SECONDS.get(step.kind, 5.0)

    def record(self, step, seconds: float) -> None:
        self.known[step.label] = round(seconds, 2)
        previous = self.known.get(step.kind)
        self.known[step.kind] = round(seconds if previous is None else 0.7 * previous + 0.3 * seconds, 2)

    def save(self) -> None:
        if self.path:
            with contextlib.suppress(OSError):
                self.path.write_text(json.dumps(self.known, indent=0, sort_keys=True))


class ConsoleEvents:
    """The console of `convert run`: progress, verdict lines, and a summary table at the end."""

    def __init__(self, console: Console, live: bool, cache_root: Optional[Path] = None,
                 judge: Optional[Callable[[Any], Optional[str]]] = None):
        self.console = console
        self.live = live
        self.judge = judge or (lambda outcome: None)
        self.durations = Durations(cache_root)
        self.started_at = time.perf_counter()
        self._progress: Optional[Progress] = None
        self._task = None
        self._remaining: dict[str, float] = {}
        self._spent = 0.0  # seconds of steps finished this run
        self._estimated_done = 0.0  # what those steps were estimated to take
        self._step_started = 0.0
        self._current = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "ConsoleEvents":
        _EPOCHS.append(self.epoch)
        if self.live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                      TextColumn("{task.fields[left]}"), console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=1.0, left="")
        return self

    def __exit__(self, *exc: object) -> None:
        _EPOCHS.remove(self.epoch)
        self.durations.save()
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    # -- executor events -------------------------------------------------------------------------
    def planned(self, steps, cached) -> None:
        self._remaining = {s.id: self.durations.estimate(s) for s in steps if s.id not in cached}
        self.line(f"{len(steps)} steps: {len(cached)} cached, {len(steps) - len(cached)} to run "
                  f"(about {_duration(sum(self._remaining.values()))})")
        self._update()

    def started(self, step) -> None:
        self._current = step.label
        self._step_started = time.perf_counter()
        self._update()

    def finished(self, outcome) -> None:
        step = outcome.step
        if step.id in self._remaining:
            self._estimated_done += self._remaining.pop(step.id)
            self._spent += outcome.seconds
            if not outcome.cached and outcome.ok:
                self.durations.record(step, outcome.seconds)
        if step.kind == "check":
            verdict = self.judge(outcome)
            if verdict:
                self.line(verdict, markup=True)
        elif outcome.error and not outcome.error.startswith("not run:"):
            self.line(f"[red]FAIL[/red] {escape(outcome.error)}", markup=True)
        elif step.kind == "stage" and not outcome.cached:
            notes = outcome.record.get("notes") or []
            self.line(f"{escape(step.label)}: {escape(notes[0]) if notes else 'done'} ({outcome.seconds:.0f} s)", markup=True)
        self._update()

    def log(self, message: str) -> None:
        if message.startswith("warning:"):
            self.line(f"[yellow]{escape(message)}[/yellow]", markup=True)
        elif self.live:
            self._current = message
            self._update()
        else:
            self.line(escape(message), markup=True)

    def epoch(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in ("loss", "accuracy"))
        text = f"{self._current.split(':')[0]}: epoch {epoch}/{epochs}" + (f", {shown}" if shown else "")
        if self.live:
            self._current = text
            self._update()
        else:
            self.line(escape(text), markup=True)

    # -- output ----------------------------------------------------------------------------------
    def line(self, text: str, markup: bool = False) -> None:
        elapsed = time.perf_counter() - self.started_at
        prefix = "" if self.live else f"{elapsed:7.1f}s "
        self.console.print(prefix + text, markup=markup, highlight=False)

    def _update(self) -> None:
        if self._progress is None:
            return
        total = self._estimated_done + sum(self._remaining.values())
        # scale what is left by how this run's steps compared with their estimates so far
        pace = self._spent / self._estimated_done if self._estimated_done > 1.0 else 1.0
        left = sum(self._remaining.values()) * pace
        self._progress.update(self._task, description=escape(self._current[:70]),
                              completed=self._estimated_done, total=max(total, 1e-9),
                              left=f"{_duration(left)} left" if self._remaining else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class NativeOutput:
    """Send everything written to file descriptors 1 and 2 (TensorFlow's C++ logging, the converters' prints and
    warnings, child processes) to a log file, while the console keeps writing to the real stderr. Standard output
    is restored before the run's JSON summary is printed, so it stays machine-readable."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._saved: dict[int, int] = {}

    def __enter__(self) -> "NativeOutput":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            os.dup2(log, fd)
        os.close(log)
        CONSOLE_FD[0] = self._saved[2]
        return self

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = {}
        CONSOLE_FD[0] = 2


CONSOLE_FD = [2]  # where the console writes: the real stderr, even while NativeOutput redirects descriptor 2


class ConsoleStream:
    """A text stream on the real stderr (CONSOLE_FD), for rich."""

    def write(self, text: str) -> int:
        os.write(CONSOLE_FD[0], text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return os.isatty(CONSOLE_FD[0])

    def fileno(self) -> int:
        return CONSOLE_FD[0]


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield
