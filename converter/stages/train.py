"""Pipeline stage `train`: fit the Keras model on data.train."""
from __future__ import annotations

from pathlib import Path

from converter.data.dataset import Dataset
from converter.model_ref import ModelRef
from converter.recipe.schema import TrainStage
from converter.stages.fit import StageResult, fit, load_trainable, save, walk_layers


def run(model: ModelRef, spec: TrainStage, data: Dataset, out_dir: Path) -> StageResult:
    """Compile and fit the model on `data`, then save it to `out_dir` (Keras SavedModel format)."""
    keras_model = load_trainable(model, spec.stage_name)
    if spec.batchnorm_momentum is not None:
        set_batchnorm_momentum(keras_model, spec.batchnorm_momentum)
    history = fit(keras_model, spec, data)
    save(keras_model, out_dir)
    notes = [f"trained {spec.epochs} epoch(s) on {history['samples']} samples: loss {history['loss'][-1]:.4g}"
             + (f", accuracy {history['accuracy'][-1]:.4f}" if "accuracy" in history else "")]
    return StageResult(notes=notes, details={"history": history})


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Set the momentum of every BatchNormalization layer, nested models included."""
    from converter.tf_env import keras

    batchnorm = keras().layers.BatchNormalization
    for _, layer in walk_layers(model):
        if isinstance(layer, batchnorm):
            layer.momentum = momentum
