"""The ONNX search space: static QDQ int8 with a set of nodes kept in float (`exclude_nodes`).

Items are the nodes onnxruntime's quantizer wrapped in QuantizeLinear/DequantizeLinear in the all-int8 model (they
keep the names of the model quantize_static read, which is what `exclude_nodes` takes); levels are 'int8' and
'float'. A node kept float reads float activations and float weights (converter/exports/onnx_float_nodes.py).

The nodes are ranked by their local error: each node of the all-int8 model is re-run alone (onnxruntime on the
extracted sub-graph between the raw tensors it reads and the dequantized output its consumers read), fed the float
model's values of those tensors, so its error is what it adds (the quantization of what it reads, of its weights,
of its output, where a fused ReLU is applied), not what it inherits. The float values come from the model quantize_static read (the float artifact after
quant_pre_process), whose tensors carry the same names. The score is the median over output channels of their SQNR
(converter/search/tflite_space.py says why, for activations with one scale per tensor); ONNX activations of rank 4
are NCHW, so the channel axis is 1 there.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from converter.search.space import Space
from converter.search.tflite_space import median_channel_sqnr

LEVELS = ["int8", "float"]
RANKING = "median_channel_sqnr"
QDQ = ("QuantizeLinear", "DequantizeLinear")
BATCH = 16  # samples per onnxruntime call
DEQUANTIZED = "_DequantizeLinear_Output"  # what quantize_static appends to a tensor's name for its dequantized twin
RENAMED_OUTPUT = "_QuantizeLinear_Input"  # what quantize_static appends to the producer's output of a graph output


def quantized_nodes(graph) -> dict[str, Any]:
    """Node name -> node, in graph order, for the nodes of a QDQ graph that read a DequantizeLinear output."""
    dequantized = {o for node in graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    return {node.name: node for node in graph.node
            if node.op_type not in QDQ and node.name and any(i in dequantized for i in node.input)}


def weight_elements(model, nodes: dict[str, Any]) -> dict[str, int]:
    """Node -> elements of the weights it reads (initializers behind a DequantizeLinear, or read directly)."""
    graph = model.graph
    sizes = {i.name: int(np.prod(i.dims)) if len(i.dims) else 1 for i in graph.initializer}
    producer = {o: node for node in graph.node for o in node.output}
    found = {}
    for name, node in nodes.items():
        total = 0
        for tensor in node.input:
            source = producer.get(tensor)
            if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in sizes:
                total += sizes[source.input[0]]
            elif tensor in sizes and sizes[tensor] > 1:
                total += sizes[tensor]
        found[name] = total
    return found


def quantized_outputs(graph, tensors: list[str]) -> dict[str, str]:
    """Tensor -> what its consumers read: the output of its QuantizeLinear -> DequantizeLinear pair, if it has one
    (a fused ReLU lives there: uint8 with zero point 0 clips at 0), else the tensor itself."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def read(tensor: str) -> str:
        for quantize in consumers.get(tensor, []):
            if quantize.op_type == "QuantizeLinear":
                for dequantize in consumers.get(quantize.output[0], []):
                    if dequantize.op_type == "DequantizeLinear":
                        return dequantize.output[0]
        return tensor

    return {tensor: read(tensor) for tensor in tensors}


def float_model(float_artifact: Path, preprocess: bool, folder: Path) -> Path:
    """The model quantize_static read: the float artifact after onnxruntime's quant_pre_process, if the export runs it."""
    from converter.exports.base import ExportResult
    from converter.exports.onnx import FILENAME, _preprocess

    import onnx

    source = float_artifact / FILENAME
    if not preprocess:
        return source
    target = _preprocess(source, folder / "preprocessed.onnx", False, ExportResult())
    model = onnx.load(str(target))
    del model.metadata_props[:]  # the artifact's own (NCHW inputs, renamed outputs), which the runtime reads
    model.metadata_props.extend(onnx.load(str(source), load_external_data=False).metadata_props)
    onnx.save(model, str(target))
    return target


def local_errors(floor_artifact: Path, graph, float_path: Path, x: np.ndarray, nodes: dict[str, Any]) -> dict[str, float]:
    """Node -> median channel SQNR (dB) of its output re-run alone in the QDQ model (`graph` is its graph) on the
    float model's inputs."""
    from converter.explain.local import cut
    from converter.runtimes.onnx_runtime import OnnxRuntime

    quantized, reference = OnnxRuntime(floor_artifact), OnnxRuntime(float_path)
    quantized.load()
    reference.load()
    try:
        tensors = quantized.tensors()
        infos = {t.name: t for t in tensors}
        raw = {t.name for t in tensors if t.op not in QDQ}  # node outputs and model inputs, as the float model has them
        read = quantized_outputs(graph, [node.output[0] for node in nodes.values()])
        outputs = {name: read[node.output[0]] for name, node in nodes.items()}
        known = {t.name for t in reference.tensors()}

        def in_float(name: str) -> str:
            """The tensor's name in the float model (the quantizer names a DequantizeLinear output after the tensor
            it quantizes, and renames the producer's output of a graph output)."""
            return name if name in known else name.removesuffix(DEQUANTIZED).removesuffix(RENAMED_OUTPUT)

        parts = {node: cut(outputs[node], infos, raw) for node in nodes}
        parts = {node: part for node, part in parts.items() if part.missing is None
                 and {in_float(outputs[node]), *map(in_float, part.feeds)} <= known}
        needed = sorted({in_float(outputs[n]) for n in parts} | {in_float(f) for part in parts.values() for f in part.feeds})
        model_inputs = {t.name for t in tensors if t.op == "input"}
        floats = _batched(lambda batch: reference.intermediates([batch], [n for n in needed if n not in model_inputs]), x)
        scores = {}
        for node, part in parts.items():
            feeds = [x if name in model_inputs else floats[in_float(name)] for name in part.feeds]
            value = _batched(lambda *batch: quantized.intermediates(list(batch), [outputs[node]], feeds=part.feeds),
                             *feeds)[outputs[node]]
            expected = floats[in_float(outputs[node])]
            scores[node] = median_channel_sqnr(*(np.moveaxis(a, 1, -1) if a.ndim == 4 else a for a in (expected, value)))
        return scores
    finally:
        quantized.close()
        reference.close()


def _batched(run, *arrays: np.ndarray) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(arrays[0]), BATCH):
        for name, value in run(*(a[start:start + BATCH] for a in arrays)).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def space(float_artifact: Path, floor_artifact: Path, preprocess: bool, x: np.ndarray) -> Space:
    """The quantized nodes of the all-int8 artifact, ranked on samples `x`."""
    import onnx

    if isinstance(x, dict):
        raise ValueError("an ONNX search ranks nodes on single-input models only")
    model = onnx.load(str(floor_artifact / "model.onnx"))
    nodes = quantized_nodes(model.graph)
    with tempfile.TemporaryDirectory(prefix="convert-onnx-search-") as tmp:
        sqnr = local_errors(floor_artifact, model.graph, float_model(float_artifact, preprocess, Path(tmp)), x, nodes)
    order = [node for node in nodes if node in sqnr]  # model order
    scores = {node: round(-sqnr[node], 3) for node in order}  # the lowest SQNR first
    ranked = sorted(order, key=lambda node: -scores[node])  # stable: ties keep model order
    elements = weight_elements(model, {n: nodes[n] for n in order})

    def export_keys(assignment: dict[str, str]) -> dict[str, Any]:
        return {"exclude_nodes": [node for node in order if assignment.get(node) == "float"]}

    return Space("node", RANKING, list(LEVELS), ranked, scores, elements, export_keys, order)
