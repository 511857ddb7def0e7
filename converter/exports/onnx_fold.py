"""Fold the BatchNormalization nodes that tf2onnx leaves behind into their convolutions.

tf2onnx folds a BatchNormalization into the Conv before it only when the two are adjacent. On feature maps
of 1x1 spatial size (the last stages of MobileNetV2 at 32x32 input, for example) its transpose optimizer
replaces the NHWC<->NCHW Transposes by Reshapes, and what is left between Conv and BatchNormalization is
a Reshape of a [N, C, 1, 1] tensor to [-1, C, 1, 1]: a no-op that blocks the fusion. onnxruntime's
optimizer (quant_pre_process) does not fold across it either. Quantized as it stands, such a
BatchNormalization costs accuracy for nothing: the convolution's raw output is quantized per tensor
before the per-channel normalization, and its rank-1 scale per tensor ("Axis 1 is out-of-range").

fold_batchnorm removes those no-op Reshapes and folds every BatchNormalization that then directly
follows a Conv with constant weights, as tf2onnx does for the adjacent ones.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

Shapes = dict[str, list[Optional[int]]]  # tensor name -> dimensions (None: unknown or symbolic)


def tensor_shapes(path: Path) -> Shapes:
    """Shapes of the tensors of the ONNX file at `path` by ONNX shape inference (works past 2 GB); none
    when the inference fails (the Reshapes are then left in place)."""
    import onnx
    from onnx import shape_inference

    with tempfile.TemporaryDirectory(prefix="convert-shapes-") as tmp:
        inferred = Path(tmp) / path.name
        try:
            shape_inference.infer_shapes_path(str(path), str(inferred))
        except Exception:  # onnx raises InferenceError, ValidationError or RuntimeError depending on the graph
            return {}
        graph = onnx.load(str(inferred), load_external_data=False).graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*graph.value_info, *graph.input, *graph.output] if v.type.tensor_type.HasField("shape")}


def fold_batchnorm(model, shapes: Shapes) -> Counter:
    """Edit the ModelProto `model` (tensors loaded) in place; count the Reshapes removed and BatchNormalizations folded."""
    done: Counter = Counter()
    graph = model.graph
    shape_inputs = _remove_identity_reshapes(graph, shapes)
    done["identity_reshapes"] = len(shape_inputs)
    replaced = set(shape_inputs)
    initializers = {t.name: t for t in graph.initializer}
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or not _foldable(conv, bn, initializers, readers, outputs):
            continue
        replaced.update([*conv.input[1:], *bn.input[1:]])
        _fold(conv, bn, initializers, graph)
        graph.node.remove(bn)
        done["folded_batchnorms"] += 1
    _drop_unread(graph, replaced)
    return done


def _readers(graph) -> Counter:
    """How many times each tensor is read, subgraphs (If, Loop, Scan bodies) included."""
    count: Counter = Counter()
    for node in graph.node:
        count.update(name for name in node.input if name)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                count.update(_readers(sub))
                count.update(o.name for o in sub.output)
    return count


def _foldable(conv, bn, initializers: dict, readers: Counter, outputs: set) -> bool:
    """Constant weights and statistics, the Conv feeding only this BatchNormalization, inference mode (one output)."""
    constant = [conv.input[1], *[name for name in conv.input[2:3] if name], *bn.input[1:5]]
    if not all(name in initializers for name in constant):
        return False
    if readers[conv.output[0]] != 1 or conv.output[0] in outputs:
        return False
    if _attribute(bn, "training_mode", 0) or len([o for o in bn.output if o]) != 1:
        return False
    return len(initializers[conv.input[1]].dims) >= 3


def _fold(conv, bn, initializers: dict, graph) -> None:
    """W' = W * s (per output channel), b' = (b - mean) * s + beta, where s = gamma / sqrt(var + epsilon)."""
    from onnx import numpy_helper

    weights = numpy_helper.to_array(initializers[conv.input[1]])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64) if has_bias else 0.0
    gamma, beta, mean, var = (numpy_helper.to_array(initializers[name]).astype(np.float64) for name in bn.input[1:5])
    scale = gamma / np.sqrt(var + _attribute(bn, "epsilon", 1e-5))
    folded = {
        bn.name + "/folded_weights": (weights * scale.reshape(-1, *[1] * (weights.ndim - 1))).astype(weights.dtype),
        bn.name + "/folded_bias": ((bias - mean) * scale + beta).astype(weights.dtype),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in folded.items())
    source = conv.input[0]
    del conv.input[:]
    conv.input.extend([source, *folded])
    conv.output[0] = bn.output[0]


def _attribute(node, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _remove_identity_reshapes(graph, shapes: Shapes) -> list[str]:
    """Remove the Reshapes whose constant target shape is their input's own shape (batch dimension as -1 or 0);
    return the shape input of each one removed."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    top_level = Counter(name for node in graph.node for name in node.input if name)
    everywhere = _readers(graph)
    removed: list[str] = []
    for node in [n for n in graph.node if n.op_type == "Reshape"]:
        source, target = node.input[0], node.output[0]
        if target in outputs or node.input[1] not in initializers or source not in shapes:
            continue
        if everywhere[target] != top_level[target]:  # read inside a subgraph: leave it
            continue
        shape = numpy_helper.to_array(initializers[node.input[1]]).tolist()
        if not _same_shape(shapes[source], shape, _attribute(node, "allowzero", 0)):
            continue
        for other in graph.node:
            for i, name in enumerate(other.input):
                if name == target:
                    other.input[i] = source
        graph.node.remove(node)
        removed.append(node.input[1])
    return removed


def _same_shape(known: list[Optional[int]], target: list[int], allowzero: int) -> bool:
    """True when Reshape(x, target) is x itself for every x of shape `known`: all but the first dimension known
    and equal, the first kept by -1, by 0 (without allowzero) or by its own known value."""
    if not known or len(known) != len(target) or any(d is None for d in known[1:]):
        return False
    first, *rest = target
    if rest != known[1:]:
        return False
    return first == -1 or (first == 0 and not allowzero) or (known[0] is not None and first == known[0])


def _drop_unread(graph, names: set[str]) -> None:
    """Remove the initializers among `names` that nothing reads any more (the unfolded weights and statistics)."""
    read = _readers(graph)
    unread = {name for name in names if not read[name]} - {i.name for i in graph.input}
    if unread:
        keep = [t for t in graph.initializer if t.name not in unread]
        del graph.initializer[:]
        graph.initializer.extend(keep)
