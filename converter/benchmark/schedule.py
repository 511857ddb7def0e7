"""How long to warm up and how many timed runs to make, and the timing loop that follows it.

Warm-up: at least ``warmup_runs`` runs AND at least ``warmup_seconds``. Measurement: at least
``min_runs`` runs AND at least ``min_seconds``; it stops at ``max_runs`` or ``max_seconds``,
whichever comes first, but never before ``min_runs`` runs.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from converter.errors import RecipeError

if TYPE_CHECKING:  # the worker process imports this module: keep pydantic out of its memory
    from converter.recipe.schema import BenchmarkSection

TIMING_KEYS = ("warmup_runs", "warmup_seconds", "min_runs", "min_seconds", "max_runs", "max_seconds")


@dataclass(frozen=True)
class Timing:
    """The warm-up and measurement limits of one timing loop (the keys TfjsRuntime.time() takes)."""

    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 100000
    max_seconds: float = 20.0

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_seconds < 0 or self.min_seconds < 0:
            raise ValueError(f"timing limits must not be negative: {self}")
        if self.min_runs < 1 or self.max_runs < 1 or self.max_seconds <= 0:
            raise ValueError(f"min_runs, max_runs and max_seconds must be positive: {self}")
        if self.max_runs < self.min_runs:  # never stop before min_runs
            object.__setattr__(self, "max_runs", self.min_runs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Schedule:
    """What to time: the timing loop limits, thread counts, batch sizes and (optionally) which backends."""

    timing: Timing
    threads: tuple[int, ...]
    batch_sizes: tuple[int, ...] = (1,)
    backends: Optional[tuple[str, ...]] = None  # None: every backend an artifact runs on
    enabled: bool = True

    @classmethod
    def from_recipe(cls, section: "BenchmarkSection", overrides: Optional[Mapping[str, Any]] = None) -> "Schedule":
        """The recipe's `benchmark:` section with CLI overrides (keys of TIMING_KEYS) applied on top."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(TIMING_KEYS)
        if unknown:
            raise ValueError(f"unknown benchmark overrides: {', '.join(sorted(unknown))}")
        values = {key: overrides.get(key, getattr(section, key)) for key in TIMING_KEYS}
        threads = _positive(section.threads or [1, os.cpu_count() or 1], "benchmark.threads")
        batches = _positive(section.batch_sizes, "benchmark.batch_sizes")
        return cls(timing=Timing(**values), threads=threads, batch_sizes=batches,
                   backends=tuple(section.backends) if section.backends else None, enabled=section.enabled)

    def max_threads(self) -> int:
        return max(self.threads)


def _positive(values: list[int], key: str) -> tuple[int, ...]:
    """Deduplicated, order kept; a value below 1 is a recipe error."""
    bad = [v for v in values if v < 1]
    if bad:
        raise RecipeError(key, f"must be positive integers, got {bad[0]}")
    return tuple(dict.fromkeys(values))


def run_timing(step: Callable[[], Any], timing: Timing,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Warm up, then time `step()` call by call as `timing` says.

    Returns {'latencies_ms': [...], 'warmup_runs': n}, the shape TfjsRuntime.time() returns.
    `clock` is seconds from an arbitrary origin (time.perf_counter by default).
    """
    start = clock()
    warmups = 0
    while warmups < timing.warmup_runs or clock() - start < timing.warmup_seconds:
        step()
        warmups += 1
    latencies: list[float] = []
    start = clock()
    seconds_needed = min(timing.min_seconds, timing.max_seconds)
    while True:
        before = clock()
        step()
        after = clock()
        latencies.append((after - before) * 1000.0)
        n = len(latencies)
        if n >= timing.max_runs or (n >= timing.min_runs and after - start >= seconds_needed):
            return {"latencies_ms": latencies, "warmup_runs": warmups}
