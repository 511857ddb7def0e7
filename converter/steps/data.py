"""Step `data`: load and preprocess one dataset into x.npy (x.npz for several inputs) and y.npy, once for every
step that reads it."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from converter.data.dataset import Dataset, describe
from converter.recipe.schema import DatasetSpec
from converter.steps import StepContext
from converter.store import Entry


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.data.loading import load_dataset

    spec = DatasetSpec.model_validate({**ctx.config["spec"], **ctx.step.context})
    inputs = model_inputs(ctx.parents["model"]) if "model" in ctx.parents else None
    data = load_dataset(spec, inputs)
    if isinstance(data.x, dict):
        np.savez(ctx.out / "x.npz", **data.x)
    else:
        np.save(ctx.out / "x.npy", data.x, allow_pickle=False)
    if data.y is not None:
        np.save(ctx.out / "y.npy", data.y, allow_pickle=False)
    record = {"class_names": data.class_names, "description": data.description, "samples": len(data)}
    if isinstance(data.x, dict):
        record["inputs"] = describe(data.x)
    else:
        record.update(shape=list(data.x.shape[1:]), dtype=data.x.dtype.name)
    return record


def load(entry: Entry, take: Optional[int] = None) -> Dataset:
    """The dataset a data entry holds, its first `take` samples when given."""
    if (entry.path / "x.npz").exists():
        with np.load(entry.path / "x.npz", allow_pickle=False) as archive:
            x: Any = {name: archive[name] for name in sorted(archive.files)}
    else:
        x = np.load(entry.path / "x.npy", allow_pickle=False)
    y_path = entry.path / "y.npy"
    y = np.load(y_path, allow_pickle=False) if y_path.exists() else None
    data = Dataset(x, y, entry.record.get("class_names"), entry.record.get("description", ""))
    return data.take(take) if take else data


def model_inputs(model: Entry) -> list[dict[str, Any]]:
    """The model's inputs: [{name, shape (with the batch dimension, None where open), dtype}], by name."""
    return list(model.record["io"]["inputs"])


def input_shape(model: Entry) -> list[Optional[int]]:
    """The input shape without the batch dimension of a single-input model (training stages take no other)."""
    from converter.errors import ModelError

    inputs = model_inputs(model)
    if len(inputs) != 1:
        raise ModelError(f"model: {len(inputs)} inputs ({', '.join(i['name'] for i in inputs)}); the pipeline stages "
                         "(train, prune, qat) train single-input models only: export it without a pipeline")
    return inputs[0]["shape"][1:]
