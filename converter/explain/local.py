"""Local error: what one layer adds by itself, told apart from what it inherits.

Where the runtime can run part of a graph on given inputs (TF.js `execute` with fed nodes, onnxruntime on an
extracted sub-graph, TF on a pruned frozen graph), each matched layer's ops are re-run alone, fed the float
model's activations of the matched tensors they read (the TF.js benchmark dump's approach), and their output is
compared with the float model's output of that layer. The ops between two matched tensors belong to the later
one, so a layer owns its weights' quantization, its own arithmetic and the quantization of its output (a
QuantizeLinear/DequantizeLinear pair after it); ONNX dynamic quantization of an input happens inside the op that
reads it, and is that op's. TFLite, which cannot cut its graph, has its own measure (converter.explain.tflite_debug).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from converter.errors import ConversionError
from converter.explain.layermap import Match
from converter.explain.measure import arrange
from converter.runtimes.base import TensorInfo


@dataclass
class Cut:
    """The part of the artifact's graph that computes one matched tensor from other matched tensors."""

    tensor: str
    feeds: list[str]  # matched tensors and model inputs it reads
    inner: list[TensorInfo] = field(default_factory=list)  # the tensors it computes, the target included
    missing: Optional[str] = None  # a tensor it reads that is neither matched nor an input, if any


def cut(tensor: str, infos: dict[str, TensorInfo], stops: set[str]) -> Cut:
    result = Cut(tensor, [])
    stack, seen = [tensor], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        info = infos.get(name)
        if name != tensor and (name in stops or (info is not None and info.op == "input")):
            result.feeds.append(name)
            continue
        if info is None:
            result.missing = name
            continue
        result.inner.append(info)
        stack.extend(info.inputs)
    result.inner.reverse()
    return result


def cuts(matches: dict[str, Match], tensors: list[TensorInfo]) -> dict[str, Cut]:
    """layer -> the cut that computes its matched tensor from the other matched tensors and the model inputs."""
    infos = {t.name: t for t in tensors}
    stops = {m.tensor for m in matches.values()} | {t.name for t in tensors if t.op == "input"}
    return {layer: cut(m.tensor, infos, stops) for layer, m in matches.items()}


def rerun(runtime, matches: dict[str, Match], tensors: list[TensorInfo], activations: dict[str, np.ndarray],
          x: np.ndarray, problems: dict[str, str]) -> dict[str, np.ndarray]:
    """tensor -> its ops re-run alone on the float model's activations of the matched tensors they read (and on the
    samples where they read a model input). A layer that cannot be re-run gets its reason in `problems`; a runtime
    that cannot cut its graph raises NotImplementedError."""
    by_tensor = {m.tensor: m for m in matches.values()}
    values: dict[str, np.ndarray] = {}
    for layer, part in cuts(matches, tensors).items():
        if part.missing is not None:
            problems[layer] = f"its ops read {part.missing}, which no layer is matched to"
            continue
        feeds = []
        for name in part.feeds:
            source = by_tensor.get(name)
            feeds.append(arrange(activations[source.layer], source.order) if source else x)
        tensor = matches[layer].tensor
        try:
            values[tensor] = runtime.intermediates(feeds, [tensor], feeds=part.feeds)[tensor]
        except ConversionError as error:
            problems[layer] = str(error)
    return values
