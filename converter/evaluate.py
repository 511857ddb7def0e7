"""Running an artifact over inputs, and judging its parity against its source model."""
from __future__ import annotations

from typing import Any

import numpy as np

from converter import formats, metrics
from converter.records import Failure, Parity


def run_batches(runtime, x: np.ndarray, batch_size: int) -> np.ndarray:
    """First output of the runtime over x, in batches."""
    outputs = [runtime.run([x[start:start + batch_size]])[0] for start in range(0, len(x), batch_size)]
    return np.concatenate(outputs, axis=0)


def parity_measurement(output: np.ndarray, source_output: np.ndarray, backend: str) -> dict[str, Any]:
    """How far an artifact is from its source model on the same inputs (cached; judged by parity_verdict)."""
    measured = metrics.reference_metrics(output, source_output)
    return {"backend": backend, "samples": int(len(output)),
            "max_abs_diff": measured["max_abs_diff"], "cosine": measured["cosine"]}


def parity_verdict(measured: dict[str, Any], fmt: str, quantization: str, artifact: str) -> tuple[Parity, list[Failure]]:
    """Judge a parity measurement against the format's declared tolerance."""
    tol = formats.tolerance(fmt, quantization)
    backend = measured["backend"]
    found = []
    if tol.max_abs_diff is not None and measured["max_abs_diff"] > tol.max_abs_diff:
        found.append(Failure(artifact, backend, "parity", f"{artifact} on {backend}: parity max_abs_diff "
                             f"{measured['max_abs_diff']:.3g} > tolerance {tol.max_abs_diff:g}",
                             "max_abs_diff", tol.max_abs_diff, measured["max_abs_diff"]))
    if measured["cosine"] < tol.min_cosine:
        silent = measured.get("silent_source_absmax")
        why = "" if silent is None else (
            f": every output is exactly 0, while the source's outputs reach only {silent:.3g}; a range that small "
            "(an untrained or vanishing model, e.g. random weights) is below what a quantized output can "
            "represent: quantize a trained model, or keep this output's layer in float")
        found.append(Failure(artifact, backend, "parity", f"{artifact} on {backend}: parity cosine "
                             f"{measured['cosine']:.6f} < tolerance {tol.min_cosine:g}{why}",
                             "cosine", tol.min_cosine, measured["cosine"]))
    parity = Parity(backend, measured["samples"], measured["max_abs_diff"], measured["cosine"],
                    {"max_abs_diff": tol.max_abs_diff, "min_cosine": tol.min_cosine}, not found, [str(f) for f in found])
    return parity, found
