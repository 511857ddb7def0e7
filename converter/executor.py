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
                ctx = StepContext(step, tmp, parents, log, store=store, recompute=recompute)
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
    """Runs the steps a plan needs for `targets` on this machine, parents first.

    With jobs=1 (a `convert run`) every step runs in this process, one at a time. With jobs > 1 (a sweep),
    independent steps run in that many worker processes at once. Latency steps always run alone, with nothing
    else running, so that their timings describe the model and not the run. With keep_going, a user error in
    one step (a bad data file in one sweep cell) fails that step and its dependents instead of the whole run.
    Subclasses change where a step runs (`_submit` / `_collect`); the walk over the plan stays here.
    """

    exclusive_kinds = ("latency",)

    def __init__(self, store: Store, force: bool = False, events: Optional[Events] = None, keep_going: bool = False,
                 jobs: int = 1):
        self.store = store
        self.force = force
        self.events = events or Quiet()
        self.keep_going = keep_going
        self.jobs = max(1, jobs)
        self._recomputed: set[str] = set()  # under --force, each entry is recomputed once per run
        self.outcomes: dict[str, Outcome] = {}  # of the steps run so far
        self._pool = None

    def run(self, plan: Plan, targets: Iterable[str]) -> dict[str, Outcome]:
        order = needed(plan, targets)
        self.store.clean_temporaries()
        cached = set() if self.force else {s.id for s in order if self.store.has(s.id)}
        self.events.planned(order, cached)
        pending = [s for s in order if s.id not in self.outcomes]
        running: dict[Any, Step] = {}
        try:
            while pending or running:
                pending = self._start_ready(pending, running)
                if running:
                    for handle, outcome in self._collect(running):
                        step = running.pop(handle)
                        self._finish(step, outcome)
                elif pending:
                    raise RuntimeError(f"no step can start: {pending[0].label} waits for a parent that never ran")
        finally:
            self._shutdown()
        return self.outcomes

    def _start_ready(self, pending: list[Step], running: dict[Any, Step]) -> list[Step]:
        waiting = []
        for step in pending:
            if any(p not in self.outcomes for p in step.parents.values()):
                waiting.append(step)
                continue
            failed = [self.outcomes[p] for p in step.parents.values() if not self.outcomes[p].ok]
            recompute = self.force and step.id not in self._recomputed
            if failed:
                self._finish(step, Outcome(step, error=f"not run: {failed[0].step.label} failed"))
            elif not recompute and (entry := self.store.get(step.id)) is not None:
                self.store.touch(step.id)
                self.events.started(step)
                self._finish(step, Outcome(step, entry, entry.record, cached=True))
            elif self._may_start(step, running):
                self.events.started(step)
                running[self._submit(step, recompute)] = step
            else:
                waiting.append(step)
        return waiting

    def _may_start(self, step: Step, running: dict[Any, Step]) -> bool:
        if any(s.kind in self.exclusive_kinds for s in running.values()):
            return False
        if step.kind in self.exclusive_kinds:
            return not running
        return len(running) < self.jobs

    def _finish(self, step: Step, outcome: Outcome) -> None:
        if not outcome.cached and outcome.error is None:
            self._recomputed.add(step.id)
        self.outcomes[step.id] = outcome
        self.events.finished(outcome)

    # -- where a step runs ------------------------------------------------------------------------
    def _submit(self, step: Step, recompute: bool) -> Any:
        """Start the step; return a handle for _collect."""
        if self.jobs == 1 or step.kind in self.exclusive_kinds:
            return _Done(self._here(step, recompute))
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return self._pool.submit(run_elsewhere, step.to_json(), str(self.store.root), recompute, self.keep_going)

    def _here(self, step: Step, recompute: bool) -> Outcome:
        parents = {role: self.outcomes[p].entry for role, p in step.parents.items()}
        try:
            return materialize(step, self.store, parents, recompute, self.events.log)
        except UserError as error:
            if not self.keep_going:
                raise
            return Outcome(step, error=f"error: {error}")

    def _collect(self, running: dict[Any, Step]) -> list[tuple[Any, Outcome]]:
        """Wait until at least one running step has finished; return (handle, outcome) of those finished."""
        done = [h for h in running if isinstance(h, _Done)]
        if done:
            return [(h, h.outcome) for h in done]
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        return [(future, self._outcome(running[future], future.result())) for future in finished]

    def _outcome(self, step: Step, reply: dict[str, Any]) -> Outcome:
        """An Outcome in this process from a step run elsewhere (its files are in the shared cache)."""
        entry = self.store.get(step.id) if reply.get("stored") else None
        return Outcome(step, entry, reply.get("record", {}), error=reply.get("error"), cached=reply.get("cached", False),
                       seconds=reply.get("seconds", 0.0))

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class _Done:
    """The handle of a step that already ran in this process."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome


def run_elsewhere(step_json: dict[str, Any], cache_root: str, recompute: bool, keep_going: bool) -> dict[str, Any]:
    """Run one step in another process (a pool worker, a Ray task): parents are read from the shared cache."""
    step = Step.from_json(step_json)
    store = Store(Path(cache_root))
    parents = {role: store.get(parent) for role, parent in step.parents.items()}
    missing = [role for role, entry in parents.items() if entry is None]
    if missing:
        return {"error": f"not run: its {', '.join(missing)} input is not in the cache at {cache_root}"}
    try:
        outcome = materialize(step, store, parents, recompute)  # type: ignore[arg-type]
    except UserError as error:
        if not keep_going:
            raise
        return {"error": f"error: {error}"}
    return {"record": outcome.record, "error": outcome.error, "cached": outcome.cached, "seconds": outcome.seconds,
            "stored": outcome.entry is not None}


def needed(plan: Plan, targets: Iterable[str]) -> list[Step]:
    """The steps `targets` need, parents before children, in plan order."""
    wanted: set[str] = set()
    for target in targets:
        wanted.add(target)
        wanted.update(plan.ancestors(target))
    return [step for step_id, step in plan.steps.items() if step_id in wanted]


def entry_path(outcome: Outcome) -> Optional[Path]:
    return outcome.entry.path if outcome.entry else None
