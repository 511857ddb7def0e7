"""Run a plan's steps: the only place that knows the cache protocol and `--force`.

`materialize` is the protocol for one step (look up and verify, lock, compute into a temporary folder, rename
into place); `LocalExecutor` walks a plan on this machine, parents before children. Another executor (a
cluster's) runs the same `materialize` elsewhere; the steps do not change.
"""
from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

from converter.errors import ConversionError, UserError
from converter.plan import Plan, Step
from converter.steps import StepContext, StepFailed, function
from converter.store import CACHE_ENV, Entry, Store


@dataclass
class Outcome:
    """What became of one step in this run."""

    step: Step
    entry: Optional[Entry] = None  # the cache entry (None when failed, or computed but not cacheable)
    record: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None  # why the step failed, or which parent failed
    cached: bool = False  # served from the cache
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Events(Protocol):
    """What an executor tells the console while it works (converter/progress.py)."""

    def planned(self, steps: list[Step], cached: set[str]) -> None: ...
    def started(self, step: Step) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def log(self, message: str) -> None: ...


class Quiet:
    def planned(self, steps: list[Step], cached: set[str]) -> None:
        pass

    def started(self, step: Step) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def materialize(step: Step, store: Store, parents: dict[str, Entry], recompute: bool,
                log: Callable[[str], None] = lambda message: None) -> Outcome:
    """The cache protocol for one step whose parents are finished.

    Reuse a verified entry unless `recompute`; otherwise take the step's lock (another process computing the
    same step is waited for, and its result reused), compute into a temporary folder and rename it into place.
    StepFailed and ConversionError become a failed Outcome; user errors and bugs propagate.
    """
    started = time.perf_counter()
    if not recompute and (entry := store.get(step.id)) is not None:
        store.touch(step.id)
        return Outcome(step, entry, entry.record, cached=True)
    with store.lock(step.id):
        if not recompute and (entry := store.get(step.id)) is not None:
            return Outcome(step, entry, entry.record, cached=True)
        if store.modified(step.id):
            log(f"warning: cache entry {step.id} ({step.label}) no longer matches its recorded hashes: recomputed")
        try:
            with store.create(step.id, step.to_json()) as (tmp, record):
                ctx = StepContext(step, tmp, parents, log)
                record.update(function(step.kind)(ctx))
                if not ctx.cache:
                    raise _Uncached(dict(record))
        except _Uncached as uncached:
            return Outcome(step, None, uncached.record, seconds=time.perf_counter() - started)
        except StepFailed as failure:
            return Outcome(step, None, failure.record, error=str(failure), seconds=time.perf_counter() - started)
        except ConversionError as failure:
            return Outcome(step, None, {}, error=str(failure), seconds=time.perf_counter() - started)
        except OSError as error:
            if error.errno in _DISK_ERRORS:  # the cache's disk, not the step, is at fault
                from converter.run_folder import reason

                raise CacheError(f"cache {store.root}: cannot write there: {reason(error)} "
                                 f"(set --cache-dir or {CACHE_ENV} to another disk)") from None
            raise
    entry = store.get(step.id)
    return Outcome(step, entry, entry.record if entry else record, seconds=time.perf_counter() - started)


_DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)


class CacheError(UserError):
    """The step cache cannot be written (a full or read-only disk)."""


class _Uncached(Exception):
    def __init__(self, record: dict[str, Any]):
        self.record = record


class Executor(Protocol):
    def run(self, plan: Plan, targets: Iterable[str]) -> dict[str, Outcome]: ...


class LocalExecutor:
    """Runs the steps a plan needs for `targets` in this process, parents first, one at a time."""

    def __init__(self, store: Store, force: bool = False, events: Optional[Events] = None):
        self.store = store
        self.force = force
        self.events = events or Quiet()
        self._recomputed: set[str] = set()  # under --force, each entry is recomputed once per run
        self.outcomes: dict[str, Outcome] = {}  # of the steps run so far

    def run(self, plan: Plan, targets: Iterable[str]) -> dict[str, Outcome]:
        order = needed(plan, targets)
        self.store.clean_temporaries()
        cached = set() if self.force else {s.id for s in order if self.store.has(s.id)}
        self.events.planned(order, cached)
        outcomes = self.outcomes
        for step in order:
            failed = [outcomes[p] for p in step.parents.values() if not outcomes[p].ok]
            if failed:
                outcome = Outcome(step, error=f"not run: {failed[0].step.label} failed")
            else:
                self.events.started(step)
                recompute = self.force and step.id not in self._recomputed
                outcome = materialize(step, self.store, {role: outcomes[p].entry for role, p in step.parents.items()},
                                      recompute, self.events.log)
                if not outcome.cached:
                    self._recomputed.add(step.id)
            outcomes[step.id] = outcome
            self.events.finished(outcome)
        return outcomes


def needed(plan: Plan, targets: Iterable[str]) -> list[Step]:
    """The steps `targets` need, parents before children, in plan order."""
    wanted: set[str] = set()
    for target in targets:
        wanted.add(target)
        wanted.update(plan.ancestors(target))
    return [step for step_id, step in plan.steps.items() if step_id in wanted]


def entry_path(outcome: Outcome) -> Optional[Path]:
    return outcome.entry.path if outcome.entry else None
