"""Step `outputs`: a pipeline model's outputs in TensorFlow on a dataset (the reference every artifact meets)."""
from __future__ import annotations

from typing import Any

import numpy as np

from converter.steps import StepContext
from converter.steps.data import input_shape, load
from converter.steps.stage import model_ref


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.data.loading import check_shape
    from converter.evaluate import run_batches
    from converter.runtimes.tf_runtime import TFRuntime

    model = ctx.parents["model"]
    data = load(ctx.parents["data"], ctx.config["take"])
    check_shape(data, input_shape(model), "data.eval")
    ref = model_ref(model)
    with TFRuntime(ref.path, signature=ref.signature) as runtime:
        output = run_batches(runtime, data.x, ctx.config["batch_size"])
    np.save(ctx.out / "outputs.npy", output, allow_pickle=False)
    return {"samples": int(len(output)), "shape": list(output.shape[1:])}


def outputs(entry) -> np.ndarray:
    return np.load(entry.path / "outputs.npy", allow_pickle=False)
