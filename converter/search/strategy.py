"""The revert search: from the most compressed assignment, revert the most sensitive items to a wider level until
the budget holds, bisecting the ranked list, then put back the reverts that turn out to be unnecessary.

Format-free: an item is a weight (TF.js), a level a dtype; `evaluate(assignment, phase)` builds and scores one
real candidate and says whether it holds the budget. The best candidate within the budget is kept at every
moment, so a search cut short by `max_trials` still yields the best valid one found so far.
"""
from __future__ import annotations

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


class OutOfTrials(Exception):
    pass


@dataclass
class Outcome:
    trials: list[Trial]
    best: Optional[Trial]  # the smallest candidate within the budget, None if none held it
    stop_reason: str


class RevertSearch:
    def __init__(self, ranked: list[str], levels: list[str], evaluate: Callable[[dict[str, str], str], Trial],
                 max_trials: int, saving: Callable[[str], float], whole_levels: tuple[str, ...] = ()):
        """ranked: items, most sensitive first. levels: most compressed first. saving(item): what putting the item
        back at the most compressed level saves (the prune phase tries the largest savings first). whole_levels:
        levels only a whole model can take (TFLite's int16x8), each tried once, every item at it, when the floor
        fails; the best candidate is the smallest of everything tried, so one of them may win."""
        self.ranked, self.levels, self.evaluate, self.max_trials, self.saving = ranked, levels, evaluate, max_trials, saving
        self.whole_levels = tuple(whole_levels)
        self.trials: list[Trial] = []
        self._seen: dict[tuple, Trial] = {}

    @property
    def best(self) -> Optional[Trial]:
        valid = [t for t in self.trials if t.passed and t.objective is not None]
        return min(valid, key=lambda t: (t.objective, t.index)) if valid else None

    def trial(self, reverted: list[str] | set[str], level: str, phase: str) -> Trial:
        chosen = set(reverted)
        assignment = {item: level if item in chosen else self.levels[0] for item in self.ranked}
        key = tuple(sorted(assignment.items()))
        if key in self._seen:
            return self._seen[key]
        if len(self.trials) >= self.max_trials:
            raise OutOfTrials
        found = self.evaluate(assignment, phase)
        found.index = len(self.trials) + 1
        self.trials.append(found)
        self._seen[key] = found
        return found

    def run(self) -> Outcome:
        try:
            reason = self._search()
        except OutOfTrials:
            reason = f"max_trials ({self.max_trials}) reached"
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
        if self.trial([], wide, "floor").passed:
            return f"every item at {self.levels[0]} holds the budget"
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
        best = self.best
        if best is not None and best.phase == "whole model":
            found += f"; every item at {next(iter(best.assignment.values()))} is smaller, and chosen"
        return found
