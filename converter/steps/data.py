"""Step `data`: load and preprocess one dataset into x.npy (and y.npy), once for every step that reads it."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from converter.data.dataset import Dataset
from converter.recipe.schema import DatasetSpec
from converter.steps import StepContext
from converter.store import Entry


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.data.loading import load_dataset

    spec = DatasetSpec.model_validate({**ctx.config["spec"], **ctx.step.context})
    shape = None
    if "model" in ctx.parents:
        shape = [d if d is not None else 1 for d in input_shape(ctx.parents["model"])]
    data = load_dataset(spec, shape)
    np.save(ctx.out / "x.npy", data.x, allow_pickle=False)
    if data.y is not None:
        np.save(ctx.out / "y.npy", data.y, allow_pickle=False)
    return {"class_names": data.class_names, "description": data.description, "samples": len(data),
            "shape": list(data.x.shape[1:]), "dtype": data.x.dtype.name}


def load(entry: Entry, take: Optional[int] = None) -> Dataset:
    """The dataset a data entry holds, its first `take` samples when given."""
    x = np.load(entry.path / "x.npy", allow_pickle=False)
    y_path = entry.path / "y.npy"
    y = np.load(y_path, allow_pickle=False) if y_path.exists() else None
    data = Dataset(x, y, entry.record.get("class_names"), entry.record.get("description", ""))
    return data.take(take) if take else data


def input_shape(model: Entry) -> list[Optional[int]]:
    """The model's input shape without the batch dimension (single-input models)."""
    from converter.errors import ModelError

    inputs = model.record["io"]["inputs"]
    if len(inputs) != 1:
        raise ModelError(f"model: {len(inputs)} inputs; the toolkit verifies single-input models only")
    return inputs[0]["shape"][1:]
