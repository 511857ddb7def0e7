"""Give a quantization-aware-trained model's weights explicit uint8 QDQ on the grid they were trained on.

tf2onnx turns the activations' FakeQuantWithMinMaxVars into QuantizeLinear/DequantizeLinear, but the
weights' fake quantization is folded into float constants (on tfmot's symmetric grid: k * scale with k in
-127..127, one scale per output channel). onnxruntime then quantizes those floats again when it loads the
model, to int8 with its own scale (max |w| / 127), which is not the trained grid when no weight reached
the trained range (measured: one logit step off TensorFlow), and runs them as uint8 x int8, which
saturates on x86 CPUs without VNNI (measured: 5.5 logit steps off).

quantize_qat_weights finds each Conv, MatMul and Gemm weight's grid from its values and writes the weight
as uint8 (k + 128, zero point 128) behind a DequantizeLinear: exactly the trained values, run by
onnxruntime's uint8 x uint8 kernels on every CPU. A weight that is on no such grid stays float.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

LEVELS = 127  # tfmot's 8-bit symmetric narrow-range weights: -127..127
ZERO_POINT = 128


def quantize_qat_weights(model) -> int:
    """Edit the ModelProto `model` (tensors loaded) in place; return how many weights were given uint8 QDQ."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    done: dict[str, str] = {}  # float weight -> its DequantizeLinear output
    for node in list(graph.node):
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        name = node.input[1]
        if name not in done:
            weights = numpy_helper.to_array(initializers[name])
            axis = _output_axis(node, weights)
            scales = grid_scales(weights, axis) if weights.dtype == np.float32 else None
            if scales is None or (opset < 13 and not np.allclose(scales, scales[0], rtol=1e-6, atol=0)):
                continue  # on no grid, or per channel where DequantizeLinear has no axis yet (opset < 13)
            done[name] = _add_dequantize(graph, name, weights, scales, axis, helper, numpy_helper, node)
        node.input[1] = done[name]
    used = {i for n in graph.node for i in n.input}
    unused = [t for t in graph.initializer if t.name in done and t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return len(done)


def _output_axis(node, weights: np.ndarray) -> Optional[int]:
    """The output-channel axis of the weight: Conv [M, C, kh, kw] -> 0; MatMul [K, N] -> 1; Gemm by transB."""
    if node.op_type == "Conv":
        return 0
    if weights.ndim != 2:
        return None
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return 1


def grid_scales(weights: np.ndarray, axis: Optional[int]) -> Optional[np.ndarray]:
    """Per output channel (per tensor when axis is None), a scale s with every weight / s an integer in
    -127..127; None when a channel is on no such grid (a float layer)."""
    rows = (np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1) if axis is not None
            else weights.reshape(1, -1)).astype(np.float64)
    scales = []
    for row in rows:
        largest = np.abs(row).max()
        if largest == 0:
            scales.append(1.0)
            continue
        for steps in range(LEVELS, 0, -1):  # the largest weight is `steps` steps from zero
            k = row * steps / largest
            if np.all(np.abs(k - np.round(k)) < 1e-3):
                scales.append(largest / steps)
                break
        else:
            return None
    return np.array(scales)


def _add_dequantize(graph, name: str, weights: np.ndarray, scales: np.ndarray, axis: Optional[int],
                    helper, numpy_helper, before) -> str:
    per_tensor = np.allclose(scales, scales[0], rtol=1e-6, atol=0)
    shape = [1] * weights.ndim
    if not per_tensor:
        shape[axis] = -1
    scale = np.float32(scales[0]) if per_tensor else scales.astype(np.float32)
    quantized = (np.round(weights / np.reshape(scale, shape)) + ZERO_POINT).astype(np.uint8)
    names = (name + "/uint8", name + "/scale", name + "/zero_point", name + "/dequantized")
    graph.initializer.extend([numpy_helper.from_array(quantized, names[0]),
                              numpy_helper.from_array(np.asarray(scale, np.float32), names[1]),
                              numpy_helper.from_array(np.full(np.shape(scale), ZERO_POINT, np.uint8), names[2])])
    attributes = {} if per_tensor else {"axis": axis}
    dequantize = helper.make_node("DequantizeLinear", list(names[:3]), [names[3]], name=names[3], **attributes)
    graph.node.insert(list(graph.node).index(before), dequantize)
    return names[3]
