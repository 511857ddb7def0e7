"""The revert search: from the most compressed assignment, revert the most sensitive items to a wider level until
the budget holds, bisecting the ranked list, then put back the reverts that turn out to be unnecessary.

Format-free: an item is a weight (TF.js), a level a dtype; `evaluate(assignment, phase)` builds and scores one
real candidate and says whether it holds the budget. The best candidate within the budget is kept at every
moment, so a search cut short by `max_trials` still yields the best valid one found so far.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Trial:
    index: int  # 1-based, in evaluation order
    phase: str  # 'anchor', 'floor', 'whole model', 'bisect', 'prune'
    assignment: dict[str, str]
    passed: bool
    objective: Optional[float]  # what is minimised (None when the candidate could not be built or scored)
    record: dict[str, Any] = field(default_factory=dict)  # sizes, metrics, reasons: for the report
    shortfall: Optional[float] = None  # how badly it misses the budget (the drop): compares failing variants
    variant: Optional[str] = None  # the whole-model setting it was built with (None: the recipe's)


class OutOfTrials(Exception):
    """The search is stopped: the message is why."""


@dataclass
class Outcome:
    trials: list[Trial]
    best: Optional[Trial]  # the smallest candidate within the budget, None if none held it
    stop_reason: str


class RevertSearch:
    def __init__(self, ranked: list[str], levels: list[str], evaluate: Callable[[dict[str, str], str], Trial],
                 max_trials: int, saving: Callable[[str], float], whole_levels: tuple[str, ...] = (),
                 variants: tuple[str, ...] = (), max_seconds: Optional[float] = None):
        """ranked: items, most sensitive first. levels: most compressed first. saving(item): what putting the item
        back at the most compressed level saves (the prune phase tries the largest savings first). whole_levels:
        levels only a whole model can take (TFLite's int16x8), each tried once, every item at it, when the floor
        fails; the best candidate is the smallest of everything tried, so one of them may win. variants: other
        whole-model settings (ONNX's calibration methods): when the floor fails, the floor is tried with each, and
        the search goes on with the one that holds the budget, or else misses it by least. max_seconds: no new
        candidate is started after that long. `evaluate(assignment, phase, variant)`; variant None is the recipe's."""
        self.ranked, self.levels, self.evaluate, self.max_trials, self.saving = ranked, levels, evaluate, max_trials, saving
        self.whole_levels, self.variants = tuple(whole_levels), tuple(variants)
        self.variant: Optional[str] = None
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.max_seconds = max_seconds
        self.trials: list[Trial] = []
        self._seen: dict[tuple, Trial] = {}

    @property
    def best(self) -> Optional[Trial]:
        valid = [t for t in self.trials if t.passed and t.objective is not None]
        return min(valid, key=lambda t: (t.objective, t.index)) if valid else None

    def trial(self, reverted: list[str] | set[str], level: str, phase: str, variant: Optional[str] = None) -> Trial:
        variant = variant or self.variant
        chosen = set(reverted)
        assignment = {item: level if item in chosen else self.levels[0] for item in self.ranked}
        key = (variant, tuple(sorted(assignment.items())))
        if key in self._seen:
            return self._seen[key]
        if len(self.trials) >= self.max_trials:
            raise OutOfTrials(f"max_trials ({self.max_trials}) reached")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OutOfTrials(f"max_seconds ({self.max_seconds:g}) reached after {len(self.trials)} candidates")
        found = self.evaluate(assignment, phase, variant)
        found.index, found.variant = len(self.trials) + 1, variant
        self.trials.append(found)
        self._seen[key] = found
        return found

    def run(self) -> Outcome:
        try:
            reason = self._search()
        except OutOfTrials as stopped:
            reason = str(stopped)
        return Outcome(self.trials, self.best, reason)

    def _search(self) -> str:
        everything = list(self.ranked)
        if not everything:
            return "nothing to search: the model has no float weights"
        wide = None
        for level in self.levels[1:]:  # the safe end first: an early stop still has a valid candidate
            if self.trial(everything, level, "anchor").passed:
                wide = level
                break
        if wide is None:
            return f"no candidate holds the budget, not even every item at {self.levels[-1]}"
        floors = [self.trial([], wide, "floor")]
        if floors[0].passed:
            return f"every item at {self.levels[0]} holds the budget"
        for variant in self.variants:
            floors.append(self.trial([], wide, "variant", variant))
            if floors[-1].passed:
                return f"every item at {self.levels[0]} holds the budget with {variant}"
        if len(floors) > 1:
            scored = [t for t in floors if t.shortfall is not None]
            self.variant = min(scored, key=lambda t: t.shortfall).variant if scored else None
        for level in self.whole_levels:
            self.trial(everything, level, "whole model")
        low, high = 0, len(everything)  # reverting the top `low` fails, the top `high` holds
        while high - low > 1:
            middle = (low + high) // 2
            if self.trial(everything[:middle], wide, "bisect").passed:
                high = middle
            else:
                low = middle
        reverted = set(everything[:high])
        order = {item: index for index, item in enumerate(self.ranked)}  # ties: rank order, never set order
        for item in sorted(reverted, key=lambda i: (-self.saving(i), order[i])):
            if len(reverted) == 1:
                break  # without it: the floor, which failed
            if self.trial(reverted - {item}, wide, "prune").passed:
                reverted.discard(item)
        found = f"finished: {len(reverted)} item(s) at {wide}, none of them can go back to {self.levels[0]}"
        if self.variants:
            setting = self.variant or "the recipe's setting"
            found += f" (with {setting}, whose floor missed the budget by least)"
        best = self.best
        if best is not None and best.phase == "whole model":
            found += f"; every item at {next(iter(best.assignment.values()))} is smaller, and chosen"
        return found
