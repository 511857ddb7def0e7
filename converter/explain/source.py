"""The float model an artifact came from, seen layer by layer: its layers in order, how they connect, and their
activations on given inputs (a Keras sub-model; or, for a plain SavedModel, the ops of its frozen signature)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from converter.model_ref import ModelRef

_PREFIXES = ("StatefulPartitionedCall", "PartitionedCall")
_SKIPPED_OPS = frozenset({"Identity", "IdentityN", "input", "Shape", "StridedSlice", "Pack", "Cast"})


@dataclass(frozen=True)
class SourceLayer:
    name: str
    kind: str  # Keras class name, or TF op type
    inputs: tuple[str, ...]  # the source layers it reads ("" stands for the model's input)
    key: tuple[str, ...]  # the name components the converters keep in their tensor names
    weights: int = 0  # number of weight values


@dataclass
class Source:
    """A float model as a list of layers (producers first) with a way to compute their activations."""

    kind: str  # 'keras' or 'savedmodel'
    layers: list[SourceLayer]
    outputs: list[str]  # the layers whose activations are the model's outputs, in output order
    _compute: object = field(repr=False, default=None)

    def activations(self, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
        """Every layer's output on `x` (first output of multi-output layers), float32."""
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), batch):
            for name, value in self._compute(x[start:start + batch]).items():
                parts.setdefault(name, []).append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def consumers(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {layer.name: [] for layer in self.layers}
        for layer in self.layers:
            for parent in layer.inputs:
                if parent in found:
                    found[parent].append(layer.name)
        return found


def open_source(ref: ModelRef) -> Source:
    return keras_source(ref.load_keras()) if ref.kind == "keras" else savedmodel_source(ref)


def keras_source(model) -> Source:
    """The model's layers (nested models count as one layer), and a sub-model that outputs them all."""
    from converter.tf_env import keras

    k = keras()
    layers, outputs = [], []
    previous = ""
    for layer in model.layers:
        if isinstance(layer, k.layers.InputLayer):
            continue
        inbound = _inbound(layer, previous, model)
        weights = int(sum(np.prod(w.shape) for w in layer.weights))
        layers.append(SourceLayer(layer.name, type(layer).__name__, inbound, (layer.name,), weights))
        previous = layer.name
    tensors = [_first(layer.get_output_at(0)) for layer in model.layers if not isinstance(layer, k.layers.InputLayer)]
    names = [layer.name for layer in layers]
    by_tensor = {id(t): n for t, n in zip(tensors, names)}
    outputs = [by_tensor.get(id(t), names[-1]) for t in model.outputs]
    sub = k.Model(model.inputs, tensors)

    def compute(x: np.ndarray) -> dict[str, np.ndarray]:
        values = sub(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values)}

    return Source("keras", layers, outputs, compute)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _inbound(layer, previous: str, model) -> tuple[str, ...]:
    """The layers feeding `layer`'s first call ('' for the model input); Sequential models chain their layers."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return (previous,) if previous else ("",)
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    names = []
    for parent in inbound:
        kind = type(parent).__name__
        names.append("" if kind == "InputLayer" else parent.name)
    return tuple(names) or (("",) if not previous else (previous,))


def savedmodel_source(ref: ModelRef) -> Source:
    """The ops of the frozen signature graph as layers (converters keep their names, less the call prefix)."""
    from converter.runtimes.tf_runtime import TFRuntime

    runtime = TFRuntime(ref.path, signature=ref.signature)
    runtime.load()
    tensors = runtime.tensors()
    alias: dict[str, str] = {}  # a skipped op's tensor -> the op tensor it passes on
    layers: list[SourceLayer] = []
    for tensor in tensors:
        if tensor.op in _SKIPPED_OPS or tensor.op == "input":
            alias[tensor.name] = alias.get(tensor.inputs[0], tensor.inputs[0]) if tensor.inputs else ""
            continue
        parts = tensor.node.split("/")
        while parts and parts[0] in _PREFIXES:
            parts = parts[1:]
        inputs = tuple(alias.get(i, i) for i in tensor.inputs)
        layers.append(SourceLayer(tensor.name, tensor.op, inputs, tuple(parts), len(tensor.weights)))
    names = [layer.name for layer in layers]
    last = alias.get(tensors[-1].name, tensors[-1].name) if tensors else ""
    outputs = [last] if last in names else names[-1:]

    def compute(x: np.ndarray) -> dict[str, np.ndarray]:
        return runtime.intermediates([x], names)

    return Source("savedmodel", layers, outputs, compute)


def order_index(source: Source) -> dict[str, int]:
    return {layer.name: i for i, layer in enumerate(source.layers)}


def find(source: Source, name: str) -> Optional[SourceLayer]:
    return next((layer for layer in source.layers if layer.name == name), None)
