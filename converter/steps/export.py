"""Step `export`: convert a pipeline model into one artifact (converter/exports/), described file by file."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from converter.errors import ConversionError
from converter.exports.base import ExportContext
from converter.recipe.schema import Export
from converter.steps import StepContext, StepFailed
from converter.steps.data import load
from converter.steps.stage import model_ref


def spec_of(ctx: StepContext):
    return TypeAdapter(Export).validate_python({**ctx.config, "name": ctx.step.context.get("name", "export")})


def calibration_samples(entry):
    """calibration(n): a seeded, order-kept subset of n samples of the calibration data."""
    def calibration(n: int):
        from converter.data.dataset import rows

        data = load(entry)
        order = np.random.default_rng(0).permutation(len(data))[:n]
        return rows(data.x, np.sort(order))  # one array, or {input name: array} for several inputs

    return calibration


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.artifact_files import describe_files
    from converter.formats import exporter

    spec = spec_of(ctx)
    names = ctx.parents["class_names"].record.get("class_names") if "class_names" in ctx.parents else None
    calibration = calibration_samples(ctx.parents["calibration"]) if "calibration" in ctx.parents else None
    export_ctx = ExportContext(build_id=ctx.step.id, class_names=names, calibration=calibration,
                               warn=lambda message: ctx.log(f"warning: {spec.name}: {message}"))
    ctx.log(f"export {spec.name}: {spec.format} ({spec.quantization_name()})")
    started = time.perf_counter()
    folder = ctx.out / "artifact"
    folder.mkdir()
    source = model_ref(ctx.parents["model"])
    model = source
    try:
        with _repaired(source, spec.format) as (model, notes):
            result = exporter(spec.format)(model, spec, folder, export_ctx)
    except ConversionError as error:  # named by the model the recipe gave, not a repaired temporary copy
        raise StepFailed(f"{spec.name}: {str(error).replace(str(model.path), str(source.path))}") from None
    result.notes[:0] = notes
    return {"seconds": round(time.perf_counter() - started, 2), "notes": result.notes, "details": result.details,
            **describe_files(folder)}


def _repaired(model, fmt: str):
    """The model as the format's converter can take it: ONNX and TF.js get depthwise-equivalent grouped
    convolutions rebuilt as DepthwiseConv2D (converter/exports/grouped.py); TFLite and SavedModel take them."""
    import contextlib

    from converter.exports.grouped import as_depthwise

    return as_depthwise(model) if fmt in ("onnx", "tfjs_graph", "tfjs_layers") else contextlib.nullcontext((model, []))
