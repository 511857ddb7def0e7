"""Step `latency`: one latency row of an artifact on a backend at a thread count and batch, in a fresh process."""
from __future__ import annotations

from typing import Any

from converter.steps import StepContext, StepFailed
from converter.steps.data import load


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.benchmark.measure import measure
    from converter.benchmark.schedule import Timing

    config = ctx.config
    ctx.log(ctx.step.label)
    sample = load(ctx.parents["input"], 1).x
    row = measure(ctx.parents["artifact"].path / "artifact", config["format"], config["backend"], config["threads"],
                  config["batch"], Timing(**config["timing"]), sample)
    if "error" in row:
        raise StepFailed(row["error"], row)
    if row.get("noisy"):
        ctx.cache = False  # measured while the machine was busy: measure again next run
    return row
