"""Step `check`: an artifact on one backend: parity against its source model, evaluation against the reference.

The record holds measurements only; verdicts (tolerances, budgets) are judged when the report is assembled, so
changing a budget reuses every check.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from converter import metrics
from converter.errors import BackendUnavailable, ConversionError, DependencyError
from converter.steps import StepContext, StepFailed
from converter.steps.data import load
from converter.steps.outputs import outputs


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.backends import open_runtime
    from converter.evaluate import parity_measurement, run_batches

    config = ctx.config
    backend, artifact = config["backend"], ctx.parents["artifact"]
    name = ctx.step.label.removeprefix("check ").rsplit(" on ", 1)[0]
    ctx.log(f"check {name} on {backend}")
    parity_x = load(ctx.parents["parity_data"], config["parity_samples"]).x
    record: dict[str, Any] = {"backend": backend}
    try:
        runtime = open_runtime(backend, config["format"], artifact.path / "artifact")
        runtime.load()
    except BackendUnavailable as error:  # not offered on this machine (no Chromium, no WebGPU adapter)
        raise StepFailed(f"{name} on {backend}: skipped: {error}", {"skipped": str(error)}) from None
    except (ConversionError, DependencyError) as error:
        raise StepFailed(f"{name} does not load in {backend}: {error}") from None
    try:
        record["runtime"] = runtime.describe()
        output = run_batches(runtime, parity_x, len(parity_x))
        record["parity"] = parity_measurement(output, outputs(ctx.parents["source_outputs"]), backend)
        if "eval_data" in ctx.parents:
            data = load(ctx.parents["eval_data"], config["eval_take"])
            output = run_batches(runtime, data.x, config["batch_size"])
            reference = outputs(ctx.parents["reference_outputs"])
            record["metrics"] = metrics.compare(output, reference, data.y)
            record["per_sample"] = metrics.per_sample(output, reference, data.y)
            np.save(ctx.out / "outputs.npy", output, allow_pickle=False)
    except ConversionError as error:
        raise StepFailed(f"{name} fails to run in {backend}: {error}", {"runtime": record.get("runtime")}) from None
    finally:
        runtime.close()
    return record
