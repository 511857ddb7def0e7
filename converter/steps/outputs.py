"""Step `outputs`: a pipeline model's outputs in TensorFlow on a dataset (the reference every artifact meets).

Every output is kept, by the name the SavedModel signature gives it (outputs.npz). An artifact's outputs are
matched to these by name (`run_outputs`), never by position: each runtime orders them its own way.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from converter.data.dataset import Inputs, count, feeds, rows
from converter.errors import ConversionError, ModelError
from converter.steps import StepContext
from converter.steps.data import load, model_inputs
from converter.steps.stage import model_ref


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.data.loading import check_inputs
    from converter.runtimes.tf_runtime import TFRuntime

    model = ctx.parents["model"]
    data = load(ctx.parents["data"], ctx.config["take"])
    check_inputs(data, model_inputs(model), "data.eval")
    ref = model_ref(model)
    with TFRuntime(ref.path, signature=ref.signature) as runtime:
        output = run_outputs(runtime, data.x, ctx.config["batch_size"])
    np.savez(ctx.out / "outputs.npz", **output)
    return {"samples": count(data.x), "outputs": {name: list(array.shape[1:]) for name, array in output.items()}}


def outputs(entry, take: Optional[int] = None) -> dict[str, np.ndarray]:
    """{output name: array} an outputs entry holds (its first `take` samples when given), in name order."""
    with np.load(entry.path / "outputs.npz", allow_pickle=False) as archive:
        return {name: archive[name][:take] if take else archive[name] for name in sorted(archive.files)}


def primary(names: Sequence[str], wanted: Optional[str]) -> str:
    """The output whose metrics head the report: verify.primary_output, else the first by name."""
    if wanted is None:
        return sorted(names)[0]
    if wanted not in names:
        from converter.suggest import did_you_mean

        raise ModelError(f"verify.primary_output: the model has no output '{wanted}' (it has "
                         f"{', '.join(sorted(names))}){did_you_mean(wanted, names)}")
    return wanted


def run_outputs(runtime, x: Inputs, batch_size: int, expected: Optional[dict[str, tuple]] = None) -> dict[str, np.ndarray]:
    """Every output of `runtime` over x in batches, by name. Inputs are fed by the runtime's input names.

    `expected` ({name: sample shape} of the source's outputs) matches the runtime's outputs to the source's: by
    name where the names agree; otherwise a single output, or outputs told apart by their shapes; ConversionError
    when they cannot be told apart.
    """
    names = list(runtime.input_names) if isinstance(x, dict) else []
    if isinstance(x, dict) and sorted(names) != sorted(x):
        if len(names) == len(x) and not set(names) & set(x):  # names the runtime cannot tell: signature order
            names = sorted(x)
        else:
            raise ConversionError(f"the artifact's inputs are {', '.join(names)}, the data's {', '.join(sorted(x))}")
    batches: list[list[np.ndarray]] = []
    for start in range(0, count(x), batch_size):
        batches.append(runtime.run(feeds(rows(x, slice(start, start + batch_size)), names)))
    arrays = [np.concatenate([batch[i] for batch in batches], axis=0) for i in range(len(batches[0]))]
    got = list(runtime.output_names) or [f"output_{i}" for i in range(len(arrays))]
    by_name = dict(zip(got, arrays))
    return by_name if expected is None else match_outputs(by_name, expected)


def match_outputs(got: dict[str, np.ndarray], expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The artifact's outputs under the source's names; shape mismatches are ConversionErrors naming the output."""
    if len(got) != len(expected):
        raise ConversionError(f"the artifact has {len(got)} output(s) ({', '.join(got)}), its source "
                              f"{len(expected)} ({', '.join(expected)})")
    if set(got) == set(expected):
        matched = dict(got)
    elif len(got) == 1:
        matched = {next(iter(expected)): next(iter(got.values()))}
    else:
        shapes = {name: tuple(shape) for name, shape in expected.items()}
        matched = {}
        for name, array in got.items():
            same = [e for e, shape in shapes.items() if shape == tuple(array.shape[1:]) and e not in matched]
            if len(same) != 1 or sum(tuple(a.shape[1:]) == tuple(array.shape[1:]) for a in got.values()) != 1:
                raise ConversionError(
                    f"cannot tell which of the artifact's outputs ({', '.join(got)}) is which of the source's "
                    f"({', '.join(expected)}): their names differ and their shapes do not tell them apart")
            matched[same[0]] = array
    for name, shape in expected.items():
        if tuple(matched[name].shape[1:]) != tuple(shape):
            raise ConversionError(f"output '{name}' has shape {list(matched[name].shape[1:])} in the artifact and "
                                  f"{list(shape)} in its source")
    return {name: matched[name] for name in sorted(matched)}
