"""Step `explain`: where an artifact's error starts on one backend, against the float model it came from
(converter/explain/: the layer map, each layer's accumulated and local error, the ranking and the suggestion)."""
from __future__ import annotations

from typing import Any

from converter.errors import ConversionError, DependencyError
from converter.steps import StepContext, StepFailed
from converter.steps.data import load
from converter.steps.stage import model_ref


def run(ctx: StepContext) -> dict[str, Any]:
    from pydantic import TypeAdapter

    from converter.backends import open_runtime
    from converter.explain.analysis import explain
    from converter.explain.source import open_source
    from converter.recipe.schema import Export

    config = ctx.config
    name, backend, fmt = ctx.step.context.get("name", "artifact"), config["backend"], config["format"]
    keys = _export_keys(config["export"], ctx.parents["artifact"].record)
    spec = TypeAdapter(Export).validate_python({**keys, "name": name})
    ctx.log(f"explain {name} on {backend}: the float model's layers on {config['samples']} samples")
    x = load(ctx.parents["data"], config["samples"]).x
    ref = model_ref(ctx.parents["model"])
    source = open_source(ref)
    activations = source.activations(x)
    folder = ctx.parents["artifact"].path / "artifact"
    runtimes = []
    try:
        runtime = _open(open_runtime(backend, fmt, folder), name, backend, runtimes)
        against = _open(open_runtime(config["against"], fmt, folder), name, config["against"], runtimes) \
            if config.get("against") else None
        record = explain(source, activations, runtime, x, fmt, spec.quantization_name(), keys, folder,
                         _tflite_debug(ref, spec, ctx) if fmt == "tflite" else None, against,
                         config.get("min_snr_db"),
                         log=lambda message: ctx.log(f"explain {name} on {backend}: {message}"))
    except NotImplementedError as error:
        raise StepFailed(f"{name} on {backend}: cannot be explained: {error}") from None
    except ConversionError as error:
        raise StepFailed(f"{name} on {backend}: cannot be explained: {error}") from None
    finally:
        for opened in runtimes:
            opened.close()
    return {"artifact": name, "backend": backend, "format": fmt, "quantization": spec.quantization_name(), **record}


def _export_keys(config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The artifact's export keys: a fixed export's own, or a searched export's with the chosen candidate's keys
    (its step config holds the searched export under 'export' and the search under 'search')."""
    if "search" not in config or "export" not in config:
        return config
    return {**config["export"], **record.get("details", {}).get("search", {}).get("recipe", {})}


def _open(runtime, name: str, backend: str, opened: list):
    try:
        runtime.load()
    except (ConversionError, DependencyError) as error:
        raise StepFailed(f"{name} does not load in {backend}: {error}") from None
    opened.append(runtime)
    return runtime


def _tflite_debug(ref, spec, ctx: StepContext):
    """A function building (once) the numeric-verification debug model, or None without calibration data."""
    if "calibration" not in ctx.parents or getattr(spec, "quantization", "") != "int8":
        return None
    from converter.explain import tflite_debug
    from converter.exports.tflite import is_qat_model
    from converter.steps.export import calibration_samples

    if is_qat_model(ref):
        return None
    built: list = []

    def build():
        if not built:
            built.append(tflite_debug.build(ref, spec, calibration_samples(ctx.parents["calibration"])))
        return built[0]

    return build
