"""Run an artifact in its own runtime: the parity check against its source model, and the evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from converter import formats, metrics
from converter.data.dataset import Dataset
from converter.errors import BackendUnavailable, ConversionError


def run_batches(runtime, x: np.ndarray, batch_size: int) -> np.ndarray:
    """First output of the runtime over x, in batches."""
    outputs = [runtime.run([x[start:start + batch_size]])[0] for start in range(0, len(x), batch_size)]
    return np.concatenate(outputs, axis=0)


def parity_measurement(output: np.ndarray, source_output: np.ndarray, backend: str) -> dict[str, Any]:
    """How far an artifact is from its source model on the same inputs (cached; judged by parity_verdict)."""
    measured = metrics.reference_metrics(output, source_output)
    return {"backend": backend, "samples": int(len(output)),
            "max_abs_diff": measured["max_abs_diff"], "cosine": measured["cosine"]}


def parity_verdict(measured: dict[str, Any], fmt: str, quantization: str, artifact: str) -> dict[str, Any]:
    """Judge a parity measurement against the format's declared tolerance."""
    tol = formats.tolerance(fmt, quantization)
    backend = measured["backend"]
    reasons = []
    if tol.max_abs_diff is not None and measured["max_abs_diff"] > tol.max_abs_diff:
        reasons.append(f"{artifact} on {backend}: parity max_abs_diff {measured['max_abs_diff']:.3g} > tolerance {tol.max_abs_diff:g}")
    if measured["cosine"] < tol.min_cosine:
        reasons.append(f"{artifact} on {backend}: parity cosine {measured['cosine']:.6f} < tolerance {tol.min_cosine:g}")
    return {**measured, "tolerance": {"max_abs_diff": tol.max_abs_diff, "min_cosine": tol.min_cosine},
            "passed": not reasons, "reasons": reasons}


def check_backend(artifact_dir: Path, fmt: str, backend: str, artifact: str,
                  parity_inputs: Optional[np.ndarray], source_output: Optional[np.ndarray],
                  eval_data: Optional[Dataset], reference_output: Optional[np.ndarray],
                  reference_labels: Optional[dict[str, float]], batch_size: int) -> dict[str, Any]:
    """Load the artifact once on `backend`; run the parity check and/or the evaluation that are asked for."""
    result: dict[str, Any] = {"backend": backend}
    try:
        runtime = formats.open_runtime(backend, fmt, artifact_dir)
        runtime.load()
    except BackendUnavailable as exc:  # [browser] this machine cannot offer the backend: a skipped row, not a failure
        result["skipped"] = str(exc)
        result["runtime"] = {"backend": backend, "skipped": str(exc)}
        return result
    except ConversionError as exc:
        result["error"] = f"{artifact} does not load in {backend}: {exc}"
        return result
    try:
        result["runtime"] = runtime.describe()
        if parity_inputs is not None:
            output = run_batches(runtime, parity_inputs, len(parity_inputs))
            result["parity"] = parity_measurement(output, source_output, backend)
        if eval_data is not None:
            output = run_batches(runtime, eval_data.x, batch_size)
            result["metrics"] = metrics.compare(output, reference_output, eval_data.y, reference_labels)
    except ConversionError as exc:
        result["error"] = f"{artifact} fails to run in {backend}: {exc}"
    finally:
        runtime.close()
    return result
