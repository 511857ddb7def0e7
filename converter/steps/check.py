"""Step `check`: an artifact on one backend: parity against its source model, evaluation against the reference.

Every output is compared, matched to the source's by name (converter/steps/outputs.py). The record holds
measurements only; verdicts (tolerances, budgets) are judged when the report is assembled, so changing a budget
reuses every check.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from converter import metrics
from converter.errors import BackendUnavailable, ConversionError, DependencyError
from converter.steps import StepContext, StepFailed
from converter.steps.data import load
from converter.steps.outputs import match_outputs, outputs, primary, run_outputs


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.backends import open_runtime

    config = ctx.config
    backend, artifact = config["backend"], ctx.parents["artifact"]
    name = ctx.step.label.removeprefix("check ").rsplit(" on ", 1)[0]
    ctx.log(f"check {name} on {backend}")
    parity_n = config["parity_samples"]
    source = outputs(ctx.parents["source_outputs"])
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
        evaluated, data, reference = None, None, None
        take = config.get("eval_take")
        if "eval_data" in ctx.parents and take != 0:
            data = load(ctx.parents["eval_data"], take)
            reference = outputs(ctx.parents["reference_outputs"], len(data))
            evaluated = run_outputs(runtime, data.x, config["batch_size"], _shapes(reference))
        same_data = ctx.step.parents.get("eval_data") == ctx.step.parents["parity_data"]
        if evaluated is not None and same_data and len(data) >= min(parity_n, len(next(iter(source.values())))):
            # the same samples: not run twice; named as the artifact's source names them (a pipeline branch's model,
            # QAT's 'quant_predictions', may name its outputs unlike the reference)
            parity_out = match_outputs({n: a[:parity_n] for n, a in evaluated.items()}, _shapes(source))
        else:
            parity_x = load(ctx.parents["parity_data"], parity_n).x
            parity_out = run_outputs(runtime, parity_x, parity_n, _shapes(source))
        record["parity"] = parity_measurement(parity_out, source, backend)
        if evaluated is not None:
            first = primary(list(reference), config.get("primary_output"))
            record["primary_output"] = first
            record["samples"] = len(data)
            cap = config.get("sample_cap")
            if cap is not None and ctx.parents["eval_data"].record.get("samples", 0) > cap:  # the cap did limit it
                record["sample_cap"] = cap
            record["metrics"] = metrics.compare_outputs(evaluated, reference, data.y, first)
            record["per_sample"] = metrics.per_sample(evaluated[first], reference[first], data.y)
            reference_labels = metrics.label_metrics(reference[first], data.y)
            if "top1" in reference_labels:  # on the same samples as the artifact (a capped backend sees fewer)
                record["reference_top1"] = reference_labels["top1"]
            np.savez(ctx.out / "outputs.npz", **evaluated)
    except ConversionError as error:
        raise StepFailed(f"{name} fails to run in {backend}: {error}", {"runtime": record.get("runtime")}) from None
    finally:
        runtime.close()
    return record


def _shapes(arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
    return {name: tuple(array.shape[1:]) for name, array in arrays.items()}


def parity_measurement(output: dict[str, np.ndarray], source: dict[str, np.ndarray], backend: str) -> dict[str, Any]:
    """How far an artifact is from its source model on the same inputs, every output (judged when the report is
    assembled): the worst max_abs_diff and cosine over the outputs at the top, each output's under `outputs`."""
    per_output = {}
    for name, expected in source.items():
        measured = metrics.reference_metrics(output[name][:len(expected)], expected)
        per_output[name] = {"max_abs_diff": measured["max_abs_diff"], "cosine": measured["cosine"]}
        reach = float(np.max(np.abs(expected))) if expected.size else 0.0
        if reach > 0 and not np.any(output[name][:len(expected)]):  # a silent output: every value exactly 0
            per_output[name]["silent_source_absmax"] = reach
    record: dict[str, Any] = {
        "backend": backend, "samples": int(len(next(iter(source.values())))),
        "max_abs_diff": max(m["max_abs_diff"] for m in per_output.values()),
        "cosine": min(m["cosine"] for m in per_output.values())}
    if len(per_output) > 1:
        record["outputs"] = per_output
    elif "silent_source_absmax" in next(iter(per_output.values())):
        record["silent_source_absmax"] = next(iter(per_output.values()))["silent_source_absmax"]
    return record
