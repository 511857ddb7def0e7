"""Step `source`: materialize the recipe's model (a file, a folder or a Keras application) into the cache."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from converter.model_ref import ModelRef
from converter.recipe.schema import ModelSpec
from converter.steps import StepContext


def spec_of(ctx: StepContext) -> ModelSpec:
    values = {k: v for k, v in ctx.config.items() if k != "weights"}
    values["weights"] = ctx.step.context.get("weights", ctx.config["weights"])
    if "model" in ctx.step.context:  # a file or folder: the application-only keys were left at their defaults
        values = {k: v for k, v in values.items() if k not in ("application", "args", "weights", "seed")}
        values["path"] = ctx.step.context["model"]
    if "custom_objects" in ctx.step.context:
        values["custom_objects"] = ctx.step.context["custom_objects"]
    return ModelSpec.model_validate(values)


def run(ctx: StepContext) -> dict[str, Any]:
    from converter.sources import io_signature, load_source

    spec = spec_of(ctx)
    ctx.log(f"loading model {spec.path or spec.application}")
    ref = load_source(spec, ctx.out / "model")
    if Path(ref.path) != ctx.out / "model":  # a SavedModel folder used in place: the cache keeps its own copy
        shutil.copytree(ref.path, ctx.out / "model", symlinks=False)
        ref = ModelRef(ctx.out / "model", ref.kind, ref.signature, ref.trusted_code)
    return {"kind": ref.kind, "signature": ref.signature, "io": io_signature(ref), "trusted_code": spec.trust_model_code}
