"""Pipeline stage `prune`: magnitude pruning with tfmot, fine-tuned, then stripped of its wrappers.

Pruning is applied layer by layer (clone_model with a clone function) so that `skip_layers` globs, 2:4
structure and block sizes can be decided per layer. Nested Sequential/functional sub-models are inlined first
(see converter.stages.nested); globs match a layer's name or its 'outer/inner' path in the source model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.data.dataset import Dataset
from converter.errors import ModelError, RecipeError
from converter.model_ref import ModelRef
from converter.recipe.schema import PruneStage
from converter.stages.fit import StageResult, fit, load_trainable, matches, save, steps_per_epoch
from converter.stages.nested import flatten_nested, layer_paths
from converter.stages.sparsity import gzip_size, zero_fraction
from converter.suggest import did_you_mean

MIN_SIZE_GAIN = 0.05


@dataclass
class _Plan:
    """Which layers get wrapped, and why the others do not."""

    spec: PruneStage
    schedule: Any
    paths: dict[str, str]  # layer name -> path in the source model, for the globs
    pruned: dict[str, Any] = field(default_factory=dict)  # name -> the wrapped (original) layer
    skipped: list[str] = field(default_factory=list)
    left_dense: dict[str, str] = field(default_factory=dict)  # name -> reason
    elementwise: list[str] = field(default_factory=list)  # block_size asked for, kernel not 2-D


def run(model: ModelRef, spec: PruneStage, data: Dataset, out_dir: Path) -> StageResult:
    """Prune the model's prunable layers to `spec.target_sparsity`, fine-tune, strip and save to `out_dir`."""
    from converter.tf_env import tfmot

    sparsity_api = tfmot().sparsity.keras
    source = load_trainable(model, spec.stage_name)
    size_before = gzip_size(source.get_weights())
    paths = layer_paths(source)
    _check_globs(paths, spec)
    flat, inlined = flatten_nested(source)

    notes: list[str] = []
    if inlined:
        notes.append(f"inlined nested model(s) {', '.join(inlined)} so that their layers can be pruned")
    schedule, schedule_details = _schedule(spec, steps_per_epoch(len(data), spec.batch_size) * spec.epochs, notes)
    plan = _Plan(spec, schedule, paths)
    pruned_model = _wrap(flat, plan)
    if not plan.pruned:
        raise ModelError(f"{model.path}: no layer left to prune (skipped: {plan.skipped or 'none'}; "
                         f"not prunable: {sorted(plan.left_dense) or 'none'})")

    history = fit(pruned_model, spec, data, callbacks=[sparsity_api.UpdatePruningStep()])
    stripped = sparsity_api.strip_pruning(pruned_model)
    save(stripped, out_dir)

    layer_sparsity = {name: round(zero_fraction(_kernels(layer)), 6) for name, layer in plan.pruned.items()}
    overall = zero_fraction([w for layer in plan.pruned.values() for w in _kernels(layer)])
    size_after = gzip_size(stripped.get_weights())
    gain = 1.0 - size_after / size_before if size_before else 0.0

    notes.append(f"pruned {len(plan.pruned)} layer(s) to {overall:.1%} zeros; gzip of weights "
                 f"{size_before} -> {size_after} bytes ({gain:.1%} smaller)")
    if gain < MIN_SIZE_GAIN:
        notes.append(f"pruning saves only {gain:.1%} of compressed weight size: it buys nothing here")
    notes.append("dense runtimes (TFLite, ONNX Runtime, TF.js) do not run faster on "
                 + ("2:4 sparse weights unless the kernel supports that structure" if spec.structure
                    else "unstructured sparsity") + ": the gain is a smaller compressed download")
    if plan.elementwise:
        notes.append(f"block_size needs 2-D kernels; pruned element-wise instead: {', '.join(plan.elementwise)}")
    if plan.left_dense:
        notes.append("left dense: " + "; ".join(f"{n} ({why})" for n, why in plan.left_dense.items()))

    details = {
        "schedule": schedule_details,
        "structure": spec.structure,
        "block_size": list(spec.block_size),
        "layer_sparsity": layer_sparsity,
        "sparsity": round(overall, 6),
        "model_sparsity": round(zero_fraction(stripped.get_weights()), 6),
        "skipped_layers": plan.skipped,
        "left_dense": plan.left_dense,
        "elementwise_layers": plan.elementwise,
        "inlined_models": inlined,
        "gzip_bytes_before": size_before,
        "gzip_bytes_after": size_after,
        "gzip_ratio": round(size_before / size_after, 4) if size_after else None,
        "gzip_gain": round(gain, 4),
        "history": history,
    }
    return StageResult(notes=notes, details=details)


def _schedule(spec: PruneStage, total_steps: int, notes: list[str]) -> tuple[Any, dict]:
    """The tfmot schedule; its last pruning step is the last multiple of the frequency within training."""
    from converter.tf_env import tfmot

    sparsity_api = tfmot().sparsity.keras
    if spec.schedule == "polynomial_decay" and spec.initial_sparsity >= spec.target_sparsity:
        raise RecipeError("pipeline", f"stage '{spec.stage_name}': initial_sparsity {spec.initial_sparsity} must be "
                                      f"below target_sparsity {spec.target_sparsity}")
    frequency = min(spec.frequency, total_steps)
    if frequency < spec.frequency:
        notes.append(f"frequency lowered from {spec.frequency} to {frequency}: training has only {total_steps} step(s)")
    end_step = (total_steps // frequency) * frequency
    if spec.structure and spec.target_sparsity != 0.5:
        notes.append(f"target_sparsity {spec.target_sparsity} ignored: 2:4 structure zeroes half of every group of 4")
    if spec.schedule == "polynomial_decay":
        schedule = sparsity_api.PolynomialDecay(initial_sparsity=spec.initial_sparsity, final_sparsity=spec.target_sparsity,
                                                begin_step=0, end_step=end_step, frequency=frequency)
    else:
        schedule = sparsity_api.ConstantSparsity(spec.target_sparsity, begin_step=0, end_step=end_step, frequency=frequency)
    details = {"type": spec.schedule, "initial_sparsity": spec.initial_sparsity, "target_sparsity": spec.target_sparsity,
               "begin_step": 0, "end_step": end_step, "frequency": frequency, "total_steps": total_steps}
    return schedule, details


def _check_globs(paths: dict[str, str], spec: PruneStage) -> None:
    names = sorted(paths.values())
    for glob in spec.skip_layers:
        if not any(matches(name, [glob]) for name in names):
            raise RecipeError("pipeline", f"stage '{spec.stage_name}': skip_layers glob '{glob}' matches no layer"
                                          + did_you_mean(glob, names))


def _wrap(model, plan: _Plan):
    """Clone the (flat) `model`, wrapping every prunable layer the plan allows."""
    from converter.tf_env import keras

    k = keras()

    def clone(layer):
        if isinstance(layer, k.layers.InputLayer):
            return layer
        if matches(plan.paths.get(layer.name, layer.name), plan.spec.skip_layers):
            plan.skipped.append(layer.name)
            return layer
        return _wrap_layer(layer, layer.name, plan)

    return k.models.clone_model(model, clone_function=clone)


def _wrap_layer(layer, name: str, plan: _Plan):
    """The pruning wrapper for one layer, or the layer itself when it has nothing tfmot can prune."""
    from converter.tf_env import tfmot

    sparsity_api = tfmot().sparsity.keras
    spec = plan.spec
    try:
        probe = sparsity_api.prune_low_magnitude(layer, pruning_schedule=plan.schedule)
    except ValueError:
        if layer.weights:
            plan.left_dense[name] = f"{type(layer).__name__} is not supported by tfmot pruning"
        return layer
    kernels = probe.layer.get_prunable_weights()
    if not kernels:
        return layer
    block_size = tuple(spec.block_size)
    if spec.structure == "2:4":
        unfit = [tuple(w.shape) for w in kernels if len(w.shape) not in (2, 4) or w.shape[-2] % 4]
        if unfit:
            plan.left_dense[name] = f"2:4 needs 2-D/4-D kernels with input channels divisible by 4, got {unfit}"
            return layer
    elif block_size != (1, 1) and any(len(w.shape) != 2 for w in kernels):
        plan.elementwise.append(name)
        block_size = (1, 1)
    plan.pruned[name] = probe.layer
    return sparsity_api.prune_low_magnitude(layer, pruning_schedule=plan.schedule, block_size=block_size,
                                            sparsity_m_by_n=(2, 4) if spec.structure == "2:4" else None)


def _kernels(layer) -> list:
    """The prunable weights of a layer made prunable by tfmot, as numpy arrays."""
    return [w.numpy() for w in layer.get_prunable_weights()]
