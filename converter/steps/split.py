"""Step `split`: one part of a dataset, split once by seed into a search part and a held-out part.

A searched export scores its candidates on the search part only; its chosen artifact is checked on the held-out
part, which the search never saw. Both parts keep the data's order; together they are the data's first `take`
samples, each exactly once.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from converter.steps import StepContext
from converter.steps.data import load


def indices(n: int, holdout: float, seed: int, part: str) -> np.ndarray:
    """The sorted sample indices of `part` ('search' or 'holdout') among n samples."""
    held = max(1, min(n - 1, round(n * holdout))) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    chosen = order[:held] if part == "holdout" else order[held:]
    return np.sort(chosen)


def run(ctx: StepContext) -> dict[str, Any]:
    config = ctx.config
    source = ctx.parents["data"]
    data = load(source, config["take"])
    chosen = indices(len(data), config["holdout"], config["seed"], config["part"])
    np.save(ctx.out / "x.npy", data.x[chosen], allow_pickle=False)
    if data.y is not None:
        np.save(ctx.out / "y.npy", data.y[chosen], allow_pickle=False)
    return {**{k: v for k, v in source.record.items() if k not in ("samples",)}, "samples": int(len(chosen)),
            "part": config["part"], "of_samples": len(data),
            "description": f"{source.record.get('description', 'data.eval')}: {config['part']} part"}
