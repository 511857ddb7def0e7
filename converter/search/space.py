"""What the search step needs from a format's search space, whatever the items are (TF.js weights, TFLite nodes).

A space module reads its items off real artifacts and ranks them; the step only sees this: the items most
sensitive first, the levels most compressed first, and how an assignment reads in recipe terms (the export keys a
candidate is built with, which are also what the report prints to paste as a fixed export).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Space:
    kind: str  # what an item is: 'weight', 'node'
    ranking: str  # how the items were ranked
    levels: list[str]  # most compressed first
    ranked: list[str]  # items, most sensitive first
    scores: dict[str, float]  # item -> its sensitivity (the higher, the earlier reverted)
    elements: dict[str, int]  # item -> weight elements it holds (what reverting it costs)
    export_keys: Callable[[dict[str, str]], dict[str, Any]]  # assignment -> the export keys that build it
    order: list[str] = field(default_factory=list)  # items in model order (the map's rows); default rank order
    whole_levels: tuple[str, ...] = ()  # levels only the whole model can take (every item at once)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # other whole-model settings: name -> export keys
    fixed: dict[str, str] = field(default_factory=dict)  # items outside the search, at a level of their own

    def summary(self, assignment: dict[str, str]) -> dict[str, int]:
        """Items per level, the fixed ones included."""
        counts: dict[str, int] = {}
        for level in {**self.fixed, **assignment}.values():
            counts[level] = counts.get(level, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self, assignment: dict[str, str], extra: Callable[[str], dict[str, Any]] = lambda item: {}) -> list[dict[str, Any]]:
        """The per-item map, in model order: name, level, elements, sensitivity."""
        assignment = {**self.fixed, **assignment}
        return [{"name": item, "level": assignment[item], "elements": self.elements.get(item, 0), **extra(item),
                 "sensitivity": float(f"{self.scores.get(item, 0.0):.4g}")} for item in (self.order or self.ranked)]
