"""Step `stage`: train, prune or QAT the parent model on data.train (converter/stages/)."""
from __future__ import annotations

import time
from typing import Any

from pydantic import TypeAdapter

from converter.model_ref import ModelRef
from converter.recipe.schema import Stage
from converter.steps import StepContext
from converter.steps.data import input_shape, load

STAGES = {
    "train": "converter.stages.train:run",
    "prune": "converter.stages.prune:run",
    "qat": "converter.stages.qat:run",
}


def model_ref(entry) -> ModelRef:
    """The model a source or stage entry holds."""
    return ModelRef(entry.path / "model", entry.record["kind"], entry.record["signature"],
                    entry.record.get("trusted_code", False))


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.data.loading import check_shape
    from converter.formats import load_symbol
    from converter.sources import io_signature

    spec = TypeAdapter(Stage).validate_python({**ctx.config, "name": ctx.step.context.get("name")})
    parent = ctx.parents["model"]
    data = load(ctx.parents["data"])
    check_shape(data, input_shape(parent), "data.train")
    ctx.log(f"stage {spec.stage_name}: {spec.stage} on {len(data)} samples")
    started = time.perf_counter()
    result = load_symbol(STAGES[spec.stage])(model_ref(parent), spec, data, ctx.out / "model")
    ref = ModelRef(ctx.out / "model", "keras", "serving_default")
    return {"kind": ref.kind, "signature": ref.signature, "io": io_signature(ref),
            "trusted_code": parent.record.get("trusted_code", False),
            "seconds": round(time.perf_counter() - started, 2), "notes": result.notes, "details": result.details}
