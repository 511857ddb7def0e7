"""Shared by the train, prune and qat stages: the stage result, loading a trainable model, seeded fitting."""
from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from converter.data.dataset import Dataset
from converter.errors import DataError, RecipeError
from converter.model_ref import ModelRef
from converter.recipe.schema import Fit

CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")


@dataclass
class StageResult:
    """What a stage reports besides the model it saved: notes for the reader, JSON-serialisable details."""

    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def load_trainable(model: ModelRef, stage: str):
    """Load `model` as a tf_keras model; a plain SavedModel cannot be trained, so that is a recipe error."""
    if model.kind != "keras":
        raise RecipeError("pipeline", f"stage '{stage}' needs a Keras model, but {model.path} is a plain SavedModel "
                                      "(save the model with tf_keras, or drop the stage)")
    return model.load_keras()


def save(model, out_dir) -> None:
    """Save a tf_keras model in the Keras SavedModel format, without optimizer state."""
    model.save(str(out_dir), include_optimizer=False)


def matches(name: str, globs: Sequence[str]) -> bool:
    """Whether a layer name (plain or 'outer/inner' for nested layers) matches any fnmatch glob."""
    short = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(short, g) for g in globs)


def walk_layers(model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (name, layer) for every layer but the inputs, descending into nested models ('outer/inner' names)."""
    from converter.tf_env import keras

    k = keras()
    for layer in model.layers:
        if isinstance(layer, k.layers.InputLayer):
            continue
        name = prefix + layer.name
        yield name, layer
        if isinstance(layer, k.Model):
            yield from walk_layers(layer, name + "/")


def fit(model, spec: Fit, data: Dataset, callbacks: Iterable = ()) -> dict:
    """Compile `model` from the spec and fit it on all of `data` with fixed seeds.

    Returns a JSON-serialisable history summary: loss (and accuracy for classification losses) per epoch.
    """
    from converter.tf_env import keras

    k = keras()
    x, y = _training_arrays(model, spec, data)
    k.utils.set_random_seed(spec.seed)
    total_steps = spec.epochs * steps_per_epoch(len(x), spec.batch_size)
    model.compile(optimizer=_optimizer(spec, total_steps), loss=_loss(spec), metrics=_metrics(spec))
    with _deterministic_ops():
        try:
            history = model.fit(x, y, batch_size=spec.batch_size, epochs=spec.epochs, shuffle=True,
                                verbose=0, callbacks=[*callbacks, _epoch_reporter(k, spec.epochs)])
        except ValueError as error:
            raise DataError(f"data.train does not fit the model: {_last_line(error)}") from error
    summary: dict[str, Any] = {
        "epochs": spec.epochs,
        "samples": int(len(x)),
        "steps_per_epoch": steps_per_epoch(len(x), spec.batch_size),
        "loss": [float(v) for v in history.history.get("loss", [])],
    }
    if "accuracy" in history.history:
        summary["accuracy"] = [float(v) for v in history.history["accuracy"]]
    return summary


def _epoch_reporter(k, epochs: int):
    """A Keras callback that tells the console (converter.progress.report_epoch) how training goes."""
    from converter.progress import report_epoch

    class EpochReporter(k.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            report_epoch(epoch + 1, epochs, {key: float(value) for key, value in (logs or {}).items()})

    return EpochReporter()


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over `samples` samples."""
    return max(1, -(-samples // batch_size))


def _training_arrays(model, spec: Fit, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    if data.y is None:
        raise DataError(f"data.train has no labels ({data.description}): training needs labels or targets")
    if len(data) == 0:
        raise DataError(f"data.train is empty ({data.description})")
    x = np.asarray(data.x, dtype=np.float32)
    y = np.asarray(data.y)
    if spec.loss == "categorical_crossentropy" and y.ndim == 1:
        classes = int(model.outputs[0].shape[-1])
        if y.min() < 0 or y.max() >= classes:
            raise DataError(f"data.train labels range {int(y.min())}..{int(y.max())} but the model has {classes} outputs")
        y = np.eye(classes, dtype=np.float32)[y.astype(np.int64)]
    elif spec.loss not in CLASSIFICATION_LOSSES:
        y = y.astype(np.float32)
    return x, y


def _last_line(error: Exception) -> str:
    """The informative last line of a Keras traceback-style message, without graph node details."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    return line.removeprefix("ValueError: ").split(" for '{{node", 1)[0]


def _optimizer(spec: Fit, total_steps: int):
    from converter.tf_env import keras

    k = keras()
    optimizers = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
    rate = spec.learning_rate
    if spec.lr_schedule == "cosine":
        rate = k.optimizers.schedules.CosineDecay(spec.learning_rate, decay_steps=total_steps)
    return getattr(k.optimizers, optimizers[spec.optimizer])(learning_rate=rate)


def _loss(spec: Fit):
    from converter.tf_env import keras

    losses = keras().losses
    if spec.loss == "sparse_categorical_crossentropy":
        return losses.SparseCategoricalCrossentropy(from_logits=spec.from_logits)
    if spec.loss == "categorical_crossentropy":
        return losses.CategoricalCrossentropy(from_logits=spec.from_logits)
    return losses.MeanSquaredError() if spec.loss == "mse" else losses.MeanAbsoluteError()


def _metrics(spec: Fit) -> list:
    from converter.tf_env import keras

    metrics = keras().metrics
    if spec.loss == "sparse_categorical_crossentropy":
        return [metrics.SparseCategoricalAccuracy(name="accuracy")]
    if spec.loss == "categorical_crossentropy":
        return [metrics.CategoricalAccuracy(name="accuracy")]
    return []


@contextlib.contextmanager
def _deterministic_ops() -> Iterator[None]:
    """Enable TensorFlow op determinism for the duration, restoring the previous setting afterwards."""
    from converter.tf_env import tf

    tf()
    from tensorflow.python.framework import config  # disable_op_determinism has no public alias

    was_enabled = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            config.disable_op_determinism()
