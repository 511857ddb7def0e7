"""One function per step kind, in one table. Each takes a StepContext and returns the step's JSON record.

A step reads only its parents' cache entries and writes only into its own temporary folder, so any executor
(this machine's, or a cluster's) can run it wherever the cache is reachable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from converter.plan import Step
from converter.store import Entry, Store

STEPS: dict[str, str] = {
    "source": "converter.steps.source:run",
    "data": "converter.steps.data:run",
    "stage": "converter.steps.stage:run",
    "outputs": "converter.steps.outputs:run",
    "export": "converter.steps.export:run",
    "check": "converter.steps.check:run",
    "latency": "converter.steps.latency:run",
    "explain": "converter.steps.explain:run",
    "split": "converter.steps.split:run",
    "search": "converter.steps.search:run",
    "score": "converter.steps.search:score",
}


class StepFailed(Exception):
    """The step could not produce its result for a reason to report against it (a converter refused the model,
    a runtime could not load the artifact). Nothing is cached; the run goes on without its dependents."""

    def __init__(self, message: str, record: dict[str, Any] | None = None):
        super().__init__(message)
        self.record = record or {}


@dataclass
class StepContext:
    step: Step
    out: Path  # the step's temporary folder: everything it writes goes here
    parents: dict[str, Entry]  # role -> finished parent entry
    log: Callable[[str], None] = lambda message: None
    cache: bool = field(default=True)  # a step sets False for a result worth reporting but not reusing
    store: Optional[Store] = None  # the cache, for a step that materializes steps of its own (search candidates)
    recompute: bool = False  # --force: the step's own sub-steps are recomputed too

    @property
    def config(self) -> dict[str, Any]:
        return self.step.config


def function(kind: str) -> Callable[[StepContext], dict[str, Any]]:
    from converter.formats import load_symbol

    return load_symbol(STEPS[kind])
