"""Pipeline stage `qat`: quantization-aware training with tfmot's default 8-bit scheme.

Layer coverage is checked before any training. Nested Sequential/functional sub-models (a Keras application
used as a backbone, say) are inlined into one flat functional model first, since tfmot cannot quantize inside
a nested model. tfmot's quantize transforms rebuild the graph without call arguments, so a `training=False`
on a layer call (a frozen backbone's BatchNormalization) does not survive into the quantized model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from converter.data.dataset import Dataset
from converter.errors import ModelError, RecipeError
from converter.model_ref import ModelRef
from converter.recipe.schema import QatStage
from converter.stages.fit import StageResult, fit, load_trainable, matches, save, walk_layers
from converter.stages.nested import flatten_nested, layer_paths
from converter.suggest import did_you_mean

# Layers tfmot's default 8-bit layout transforms fold or split, though its registry does not list them.
_HANDLED_BY_TRANSFORMS = ("SeparableConv1D", "SeparableConv2D")
_FOLDS_BATCH_NORM = ("Conv2D", "DepthwiseConv2D", "Dense")


def run(model: ModelRef, spec: QatStage, data: Dataset, out_dir: Path) -> StageResult:
    """Quantize-annotate the model (all of it, or the layers matching `spec.layers`), fine-tune and save it."""
    from converter.tf_env import tfmot

    quantization = tfmot().quantization.keras
    source = load_trainable(model, spec.stage_name)
    paths = layer_paths(source)
    flat, inlined = flatten_nested(source)
    unsupported = unsupported_layers(flat)
    notes: list[str] = []
    if inlined:
        notes.append(f"inlined nested model(s) {', '.join(inlined)} so that their layers can be quantized")

    if spec.layers is None:
        if unsupported:
            raise ModelError(f"{model.path}: tfmot cannot quantize layer(s) {_describe(unsupported)}; quantize only the "
                             f"supported ones with `layers:` globs in stage '{spec.stage_name}'")
        annotated = quantization.quantize_annotate_model(flat)
    else:
        annotated = _annotate_matching(flat, spec, unsupported, paths)
    try:
        with quantization.quantize_scope():
            quantized = quantization.quantize_apply(annotated)
    except (RuntimeError, ValueError) as error:
        raise ModelError(f"{model.path}: tfmot cannot quantize this model: {str(error).splitlines()[0]}") from error

    history = fit(quantized, spec, data)
    save(quantized, out_dir)
    wrapped = quantized_layer_names(quantized)
    notes.append(f"quantization-aware training of {len(wrapped)} layer(s) for {spec.epochs} epoch(s)")
    if unsupported:
        notes.append(f"left in float (unsupported by tfmot): {_describe(unsupported)}")
    details: dict[str, Any] = {
        "quantized_layers": wrapped,
        "unsupported_layers": unsupported,
        "inlined_models": inlined,
        "history": history,
    }
    return StageResult(notes=notes, details=details)


def unsupported_layers(model) -> dict[str, str]:
    """Layers (name -> class) that tfmot's default 8-bit scheme cannot quantize."""
    from converter.tf_env import tfmot

    tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
    )

    registry = registry_module.Default8BitQuantizeRegistry()
    found: dict[str, str] = {}
    for name, layer in walk_layers(model):
        cls = type(layer).__name__
        if registry.supports(layer) or cls in _HANDLED_BY_TRANSFORMS or _is_folded_batch_norm(layer):
            continue
        found[name] = cls
    return found


def quantized_layer_names(model) -> list[str]:
    """Names of the layers inside tfmot quantize wrappers."""
    from converter.tf_env import tfmot

    wrapper = tfmot().quantization.keras.QuantizeWrapperV2
    return [layer.layer.name for layer in model.layers if isinstance(layer, wrapper)]


def _annotate_matching(model, spec: QatStage, unsupported: dict[str, str], paths: dict[str, str]):
    """Clone the (flat) `model` with quantize annotations on the layers whose name or source path matches `spec.layers`."""
    from converter.tf_env import keras, tfmot

    k, quantization = keras(), tfmot().quantization.keras
    names = [name for name, _ in walk_layers(model)]
    for glob in spec.layers or []:
        if not any(matches(paths.get(name, name), [glob]) for name in names):
            raise RecipeError("pipeline", f"stage '{spec.stage_name}': layers glob '{glob}' matches no layer"
                                          + did_you_mean(glob, sorted(paths.values())))
    chosen = [name for name in names if matches(paths.get(name, name), spec.layers or [])]
    bad = {name: unsupported[name] for name in chosen if name in unsupported}
    if bad:
        raise ModelError(f"stage '{spec.stage_name}': `layers:` selects layer(s) tfmot cannot quantize: {_describe(bad)}")

    def annotate(layer):
        if isinstance(layer, k.layers.InputLayer) or layer.name not in chosen:
            return layer
        return quantization.quantize_annotate_layer(layer)

    return k.models.clone_model(model, clone_function=annotate)


def _is_folded_batch_norm(layer) -> bool:
    """A BatchNormalization right after a linear Conv2D/DepthwiseConv2D/Dense, which the 8-bit transforms fold."""
    if type(layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization") or len(layer._inbound_nodes) != 1:
        return False
    producers = layer._inbound_nodes[0].inbound_layers
    producers = producers if isinstance(producers, list) else [producers]
    if len(producers) != 1 or type(producers[0]).__name__ not in _FOLDS_BATCH_NORM:
        return False
    return producers[0].get_config().get("activation") == "linear"


def _describe(layers: dict[str, str]) -> str:
    return ", ".join(f"'{name}' ({cls})" for name, cls in layers.items())
