"""Keep the nodes that exclude_nodes / exclude_op_types name in float after onnxruntime's static QDQ quantization.

quantize_static leaves an excluded node's weights float but still feeds it through the QuantizeLinear/
DequantizeLinear pairs of its neighbours' activations: an excluded Conv reads DequantizeLinear(x). onnxruntime
(1.31.1) then quantizes it again when it loads the model, at its default optimization level: the
WeightBiasQuantization optimizer gives any Conv, ConvTranspose or Gemm whose input comes from a per-tensor
DequantizeLinear and whose weight is a float initializer an int8 Q/DQ on that weight (one symmetric scale for
the whole tensor), and the QDQ fusions then run it as a QLinearConv. The excluded node ends up quantized, with
coarser weights than quantize_static would have given it.

keep_float rewires each excluded node so that no DequantizeLinear feeds it, whatever the session options:
- an activation input reads the same values computed as (x - zero_point) * scale with Cast, Sub and Mul, bit
  for bit what the DequantizeLinear gives, in ops no QDQ optimizer matches. The node reads the quantized
  activation its quantized producer writes (as TFLite's float ops behind a Dequantize do), and that producer
  keeps its fused int8 kernel. Reading the float tensor before the QuantizeLinear instead would be wrong:
  quantize_static folds a ReLU into the uint8 QuantizeLinear that follows it, so that tensor is the
  producer's output before its ReLU (measured: a seeded 3-conv net fell from 29.2 dB to 8.7 dB that way).
- a dequantized weight or bias is replaced by the float model's initializer.
The DequantizeLinear nodes and initializers left without a consumer are removed.
"""
from __future__ import annotations

from converter.exports.base import unique_name

_Q, _DQ = "QuantizeLinear", "DequantizeLinear"


def excluded_nodes(model, names, op_types) -> list[str]:
    """The names of the nodes of `model` that `names` or `op_types` exclude from quantization."""
    names, op_types = set(names), set(op_types)
    return [node.name for node in model.graph.node if node.name in names or node.op_type in op_types]


def keep_float(model, source, names) -> list[str]:
    """Edit the quantized ModelProto `model` in place so that no DequantizeLinear feeds the nodes `names`, taking
    float weights from `source` (the model quantize_static was given, tensors loaded). Return the nodes rewired."""
    graph = model.graph
    names = set(names)
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {t.name for t in graph.initializer}
    source_nodes = {node.name: node for node in source.graph.node}
    source_initializers = {t.name: t for t in source.graph.initializer}
    taken = set(producers) | initializers | {v.name for v in graph.input}
    done: dict[str, str] = {}  # DequantizeLinear output -> the float tensor that replaces it
    added = []
    rewired = []
    for node in graph.node:
        if node.name not in names:
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != _DQ:
                continue
            if name not in done:
                original = source_nodes[node.name].input[index] if node.name in source_nodes else ""
                if dq.input[0] in initializers and original in source_initializers:
                    done[name] = _float_initializer(source_initializers[original], graph, taken)
                elif dq.input[0] not in initializers and _is_scalar(dq, graph):
                    done[name], nodes = _dequantize_in_float(dq, graph, taken)
                    added += nodes
                else:
                    continue  # a per-channel activation, or a constant the float model does not hold: left as it is
            node.input[index] = done[name]
            if node.name not in rewired:
                rewired.append(node.name)
    if rewired:
        _insert_after_producers(graph, added)
        _drop_unused(graph)
    return rewired


def _float_initializer(tensor, graph, taken) -> str:
    """Add the float model's initializer `tensor` (under a new name if the quantized graph uses its own)."""
    name = unique_name(tensor.name, taken)
    copy = graph.initializer.add()
    copy.CopyFrom(tensor)
    copy.name = name
    return name


def _is_scalar(dq, graph) -> bool:
    from onnx import numpy_helper

    constants = {t.name: t for t in graph.initializer}
    return all(name in constants and numpy_helper.to_array(constants[name]).size == 1 for name in dq.input[1:3])


def _dequantize_in_float(dq, graph, taken):
    """(x - zero_point) * scale as Cast, Sub and Mul: the DequantizeLinear's values to the last bit, in ops no QDQ
    optimizer matches. Return the output's name and the new nodes (not yet in the graph)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    constants = {t.name: t for t in graph.initializer}
    base = dq.output[0]
    cast, shifted, out = (unique_name(f"{base}_float_{part}", taken) for part in ("cast", "shifted", "dequantized"))
    zero = unique_name(f"{base}_float_zero_point", taken)
    point = numpy_helper.to_array(constants[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] \
        else np.zeros((), np.float32)
    graph.initializer.append(numpy_helper.from_array(point.reshape(()), zero))
    nodes = [helper.make_node("Cast", [dq.input[0]], [cast], name=cast, to=TensorProto.FLOAT),
             helper.make_node("Sub", [cast, zero], [shifted], name=shifted),
             helper.make_node("Mul", [shifted, dq.input[1]], [out], name=out)]
    return out, nodes


def _insert_after_producers(graph, nodes) -> None:
    """Put `nodes` in the graph, each right after the node producing its first input (topological order)."""
    for new in nodes:
        position = next((i + 1 for i, node in enumerate(graph.node) if new.input[0] in node.output), 0)
        graph.node.insert(position, new)




def _drop_unused(graph) -> None:
    """Remove the Q/DQ nodes whose outputs nothing reads (repeatedly), then the initializers nothing reads."""
    while True:
        read = _read(graph)
        dead = [node for node in graph.node if node.op_type in (_Q, _DQ) and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = _read(graph)
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    present = read | {out for node in graph.node for out in node.output}
    for value in [v for v in graph.value_info if v.name not in present]:
        graph.value_info.remove(value)


def _read(graph) -> set[str]:
    """The tensors the graph's nodes (their subgraphs included) and outputs read."""
    names = {v.name for v in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                names |= _read(subgraph)
    return names
