"""Bias correction of a quantized TF.js graph model's kernels, on calibration data.

Rounding a kernel W to uint8 leaves an error dW whose sum over a channel's few inputs is not zero (a 3x3 depthwise
kernel has nine), so every output channel of the op is shifted by a constant on average: E[conv(x, W + dW)] -
E[conv(x, W)] = conv(E[x], dW), the op being linear. Layer after layer these shifts add up (measured on MobileNet
v1 0.25: per-channel uint8 kernels keep 79 % top-1 agreement with the float model without correction, 93 % with it).
Subtracting the shift from the op's bias removes it (Nagel et al., "Data-Free Quantization through Weight
Equalization and Bias Correction", 2019, the empirical variant): E[x] is the mean of the op's input over the
calibration samples, read in TF.js from the float artifact, so the correction is measured where it will run.

Only kernels whose op has a bias of its own (a fused op's BiasAdd, or a plain op followed by BiasAdd/Add/AddV2 of
a weight) are corrected; the others are left as they are and counted.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np

BATCH = 25  # calibration samples per TF.js call
MAX_BYTES = 64 * 2 ** 20  # activations read back per call, at most (one tensor alone may exceed it)


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        return [int(i) for i in value["list"].get("i", [])]
    return value.get("b", default)


def _data_inputs(node: dict[str, Any]) -> list[str]:
    return [i for i in node.get("input", []) if not i.startswith("^")]


def targets(content: dict[str, Any], kernels: Collection[str]) -> dict[str, dict[str, Any]]:
    """Kernel -> {node, input, bias} for the named kernels whose op has a bias weight of its own: the fused op's
    third input when its fused ops start with BiasAdd, or the weight a single BiasAdd/Add/AddV2 consumer adds."""
    from converter.exports.tfjs_per_channel import KERNEL_OPS, fused_ops

    nodes = content["modelTopology"].get("node", [])
    weights = {w["name"]: w for group in content["weightsManifest"] for w in group["weights"]}
    consumers: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        for name in _data_inputs(node):
            consumers.setdefault(name.split(":")[0], []).append(node)
    found: dict[str, dict[str, Any]] = {}
    for node in nodes:
        inputs = _data_inputs(node)
        if len(inputs) < 2 or inputs[1] not in kernels or len(consumers.get(inputs[1], [])) != 1:
            continue
        op = node.get("op", "")
        if op not in KERNEL_OPS:
            continue
        if _attr(node, "data_format", "NHWC") not in ("NHWC", None) or _attr(node, "transpose_a") or _attr(node, "transpose_b"):
            continue
        bias = None
        if op.startswith(("_Fused", "Fused")):
            if fused_ops(node)[:1] == ["BiasAdd"] and len(inputs) >= 3:
                bias = inputs[2]
        else:
            after = consumers.get(node["name"], [])
            if len(after) == 1 and after[0].get("op") in ("BiasAdd", "Add", "AddV2"):
                other = [i for i in _data_inputs(after[0]) if i != node["name"]]
                bias = other[0] if len(other) == 1 else None
        if bias is None or bias not in weights or len(consumers.get(bias, [])) != 1:
            continue
        if len(weights[bias]["shape"]) != 1:
            continue
        found[inputs[1]] = {"node": node, "input": inputs[0], "bias": bias}
    return found


def input_means(artifact: Path, names: list[str], samples: Any) -> dict[str, np.ndarray]:
    """The mean over the samples of each named tensor of the float artifact, run in TF.js (wasm; cpu when wasm
    cannot run the graph), keeping every axis but the batch. Read a few tensors and samples at a time, so that
    large models' activations never travel all at once."""
    from converter.errors import ConversionError
    from converter.runtimes.tfjs import TfjsRuntime

    for backend in ("wasm", "cpu"):
        runtime = TfjsRuntime(artifact, threads=1, fmt="tfjs_graph", backend=backend)
        try:
            runtime.load()
            return _means(runtime, names, samples)
        except ConversionError:
            if backend == "cpu":
                raise
        finally:
            runtime.close()
    raise AssertionError("unreachable")


def _means(runtime: Any, names: list[str], samples: Any) -> dict[str, np.ndarray]:
    from converter.data.dataset import count, feeds, rows

    def read(index: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
        return runtime.intermediates(feeds(rows(samples, index), runtime.input_names), wanted)

    total = count(samples)
    first = read(np.arange(1), names)
    groups: list[list[str]] = [[]]
    for name in names:  # each call carries at most MAX_BYTES of activations
        if groups[-1] and sum(first[n].nbytes for n in groups[-1] + [name]) * BATCH > MAX_BYTES:
            groups.append([])
        groups[-1].append(name)
    sums = {name: value.astype(np.float64).sum(axis=0) for name, value in first.items()}
    for start in range(1, total, BATCH):
        index = np.arange(start, min(total, start + BATCH))
        for group in groups:
            for name, value in read(index, group).items():
                sums[name] += value.astype(np.float64).sum(axis=0)
    return {name: value / total for name, value in sums.items()}


def shift(node: dict[str, Any], mean_input: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The mean over output positions of op(E[x], dW): what the rounding adds to each output channel on average."""
    from converter.tf_env import tf

    tensorflow = tf()
    op = node["op"]
    if op in ("MatMul", "_FusedMatMul"):
        return np.asarray(mean_input, np.float64).reshape(-1, delta.shape[0]).mean(axis=0) @ delta.astype(np.float64)
    x = tensorflow.constant(mean_input[None].astype(np.float32))
    kernel = tensorflow.constant(delta.astype(np.float32))
    strides = _attr(node, "strides", [1, 1, 1, 1])
    dilations = _attr(node, "dilations", [1, 1, 1, 1])
    padding: Any = _attr(node, "padding", "VALID")
    if padding == "EXPLICIT":
        pads = _attr(node, "explicit_paddings", [0] * 8)
        padding = [pads[i:i + 2] for i in range(0, 8, 2)]
    if op in ("Conv2D", "_FusedConv2D"):
        out = tensorflow.nn.conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations)
    else:
        if isinstance(padding, list):
            x = tensorflow.pad(x, padding)
            padding = "VALID"
        out = tensorflow.nn.depthwise_conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations[1:3])
    result = out.numpy().astype(np.float64)
    return result.reshape(-1, result.shape[-1]).mean(axis=0)


def corrections(artifact: Path, content: dict[str, Any], weights: dict[str, np.ndarray], dtypes: dict[str, str],
                restored: Callable[[str, np.ndarray], np.ndarray], samples: Any) -> tuple[dict[str, np.ndarray], int]:
    """({bias name: what to subtract from it}, kernels left uncorrected) for the kernels `dtypes` quantizes, with
    `restored(name, W)` the kernel as the artifact will restore it and `samples` the calibration inputs."""
    quantized = {name: dtype for name, dtype in dtypes.items() if dtype in ("uint8", "uint16", "float16")}
    found = targets(content, quantized)
    kernels = [name for name in quantized if len(weights[name].shape) >= 2]
    if not found:
        return {}, len(kernels)
    means = input_means(artifact, sorted({t["input"] for t in found.values()}), samples)
    deltas: dict[str, np.ndarray] = {}
    for kernel, target in found.items():
        values = weights[kernel]
        delta = restored(kernel, values) - values.astype(np.float64)
        deltas[target["bias"]] = shift(target["node"], means[target["input"]], delta)
    return deltas, len([k for k in kernels if k not in found])
