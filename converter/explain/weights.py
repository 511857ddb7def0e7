"""The weights an artifact stores for a layer, as the runtime sees them (dequantized), with the quantization step,
and what is unusual about them and about the layer's float activations.

Read from the artifact's own files: TF.js model.json's weight manifest and shards (uint8/uint16 values with their
`min` and `scale`, float16), ONNX initializers (DequantizeLinear's scale, zero point and axis; for dynamic int8 the
`<name>_quantized` and `<name>_scale` pairs onnxruntime writes), TFLite constant tensors and their (per-channel)
scales.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

_TFJS_BYTES = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "float16": 2, "bool": 1}
_TFJS_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16, "float16": np.float16,
               "bool": np.bool_}


@dataclass
class Weight:
    name: str
    values: np.ndarray  # float32, as the runtime computes with them
    step: Optional[np.ndarray] = None  # the quantization step, per tensor (shape ()) or per channel
    axis: Optional[int] = None  # the channel axis of a per-channel step
    dtype: str = "float32"  # how the artifact stores it


# ----------------------------------------------------------------------------- readers
def read_tfjs(folder: Path) -> dict[str, Weight]:
    model = json.loads((folder / "model.json").read_text())
    found: dict[str, Weight] = {}
    for group in model["weightsManifest"]:
        data = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization") or {}
            stored = quant.get("dtype", spec["dtype"])
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            size = count * _TFJS_BYTES.get(stored, 4)
            raw = np.frombuffer(data, dtype=_TFJS_NUMPY.get(stored, np.float32), count=count, offset=offset)
            offset += size
            values = raw.astype(np.float32).reshape(spec["shape"])
            step = None
            if stored in ("uint8", "uint16"):
                values = (values * np.float32(quant["scale"]) + np.float32(quant["min"])).astype(np.float32)
                step = np.asarray(quant["scale"], dtype=np.float64)
            found[spec["name"]] = Weight(spec["name"], values, step, None, stored)
    return found


def read_onnx(model, names: set[str]) -> dict[str, Weight]:
    """The weights among `names`: initializers, or DequantizeLinear outputs of initializers."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    array = lambda n: numpy_helper.to_array(inits[n])  # noqa: E731
    found: dict[str, Weight] = {}
    producers = {o: node for node in model.graph.node for o in node.output}
    for name in names:
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and all(i in inits for i in node.input[:2]):
            quantized, scale = array(node.input[0]), array(node.input[1]).astype(np.float64)
            zero = array(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] in inits else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if np.ndim(scale) else None
            values = _dequantize(quantized, scale, zero, axis)
            found[name] = Weight(name, values, scale, axis, quantized.dtype.name)
        elif name in inits:
            values = array(name)
            base = name[: -len("_quantized")] if name.endswith("_quantized") else None
            if base is not None and values.dtype.kind in "iu" and f"{base}_scale" in inits:
                scale = array(f"{base}_scale").astype(np.float64)
                zero = array(f"{base}_zero_point").astype(np.float64) if f"{base}_zero_point" in inits else 0.0
                axis = _axis_of(values.shape, np.size(scale)) if np.ndim(scale) and np.size(scale) > 1 else None
                if axis is None:
                    scale, zero = scale.reshape(-1)[0], np.asarray(zero).reshape(-1)[0]
                found[name] = Weight(name, _dequantize(values, scale, zero, axis), scale, axis, values.dtype.name)
            elif values.dtype.kind == "f":
                found[name] = Weight(name, values.astype(np.float32), None, None, values.dtype.name)
    return found


def read_tflite(interpreter, names: set[str]) -> dict[str, Weight]:
    found: dict[str, Weight] = {}
    for detail in interpreter.get_tensor_details():
        if detail["name"] not in names:
            continue
        try:
            raw = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        params = detail.get("quantization_parameters") or {}
        scales = np.asarray(params.get("scales", []), dtype=np.float64)
        zeros = np.asarray(params.get("zero_points", []), dtype=np.float64)
        if raw.dtype.kind in "iu" and scales.size:
            axis = int(params.get("quantized_dimension", 0)) if scales.size > 1 else None
            step = scales if scales.size > 1 else scales.reshape(())
            values = _dequantize(raw, step, zeros if zeros.size > 1 else (zeros[0] if zeros.size else 0.0), axis)
            found[detail["name"]] = Weight(detail["name"], values, step, axis, raw.dtype.name)
        elif raw.dtype.kind == "f":
            found[detail["name"]] = Weight(detail["name"], raw.astype(np.float32), None, None, raw.dtype.name)
    return found


def _axis_of(shape, size: int) -> Optional[int]:
    """The axis a per-channel scale of `size` values runs along: the output channels (first for a Conv's OIHW,
    last for a MatMul's (in, out)), or None when no axis has that length."""
    matching = [i for i, n in enumerate(shape) if n == size]
    if not matching:
        return None
    return matching[-1] if len(shape) == 2 else matching[0]


def _dequantize(values: np.ndarray, scale, zero, axis: Optional[int]) -> np.ndarray:
    values = values.astype(np.float64)
    scale, zero = np.asarray(scale, dtype=np.float64), np.asarray(zero, dtype=np.float64)
    if axis is not None and scale.ndim == 1 and values.ndim:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.ndim == 1 else zero
    return ((values - zero) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- statistics
def weight_stats(weight: Weight, channels: Optional[int], channels_last: bool) -> dict[str, Any]:
    """Range, outliers (the weights past a quarter of the largest |w|, and how far the largest is from the median
    |w|), per-channel spread, the share of weights on the level nearest zero, and the SQNR its quantization step
    allows (mean w² against step²/12, the uniform rounding noise)."""
    values = weight.values.astype(np.float64)
    magnitude = np.abs(values).reshape(-1)
    stats: dict[str, Any] = {"name": weight.name, "dtype": weight.dtype, "count": int(values.size),
                             "min": float(values.min()), "max": float(values.max())}
    peak, median = float(magnitude.max()), float(np.median(magnitude))
    stats["outliers"] = int(np.sum(magnitude > peak / 4))
    stats["range_ratio"] = round(peak / median, 1) if median > 0 else None
    axis = _channel_axis(values.shape, channels, channels_last, weight.axis)
    if axis is not None and values.shape[axis] > 1:
        per_channel = np.max(np.abs(np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)), axis=1)
        median = float(np.median(per_channel))
        stats["channel_spread"] = round(float(per_channel.max()) / median, 2) if median > 0 else None
        stats["widest_channel"] = int(np.argmax(per_channel))
    if weight.step is not None:
        levels, counts = np.unique(values, return_counts=True)
        nearest = int(np.argmin(np.abs(levels)))
        stats["levels_used"] = int(levels.size)
        stats["share_on_zero_level"] = round(float(counts[nearest]) / values.size, 4)
        step = np.asarray(weight.step, dtype=np.float64)
        if step.ndim == 0:
            noise = float(step) ** 2 / 12
        else:
            sizes = values.size / step.size
            noise = float(np.sum(sizes * step**2 / 12) / values.size)
        signal = float(np.mean(values**2))
        stats["step"] = float(np.max(step))
        stats["sqnr_db_estimate"] = round(10 * np.log10(signal / noise), 2) if noise > 0 and signal > 0 else None
    return stats


def _channel_axis(shape, channels: Optional[int], channels_last: bool, axis: Optional[int]) -> Optional[int]:
    if axis is not None:
        return axis
    if channels is None:
        return None
    matching = [i for i, size in enumerate(shape) if size == channels]
    if not matching:
        return None
    return matching[-1] if channels_last else matching[0]


def activation_stats(values: np.ndarray) -> dict[str, Any]:
    """Per-channel (last axis, as the float model keeps it) spread of the layer's float output."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1]) if values.ndim > 1 else \
        np.asarray(values, dtype=np.float64).reshape(-1, 1)
    std = flat.std(axis=0)
    peak = np.abs(flat).max(axis=0)
    stats: dict[str, Any] = {"channels": int(flat.shape[1]), "min": float(flat.min()), "max": float(flat.max())}
    if flat.shape[1] > 1:
        median_peak = float(np.median(peak))
        stats["range_ratio"] = round(float(peak.max()) / median_peak, 2) if median_peak > 0 else None
        stats["widest_channel"] = int(np.argmax(peak))
        top = float(std.max())
        stats["flat_channels"] = int(np.sum(std <= 1e-6 * top)) if top > 0 else int(flat.shape[1])
    return stats
