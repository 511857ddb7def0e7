"""The one table of formats: which exporter makes each, its family, and its parity tolerances.

Which backends run a format is the backends table's business (converter/backends.py); the schema, the
generated docs and the renderers derive their lists from these two tables.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Tolerance:
    """Parity tolerance of an artifact against its source model on the same inputs."""

    max_abs_diff: Optional[float]
    min_cosine: float


@dataclass(frozen=True)
class FormatInfo:
    exporter: str  # "module:function"
    family: str  # 'tflite', 'onnx', 'tfjs', 'savedmodel': artifacts compared with the float one of their family
    tolerances: dict[str, Tolerance]  # by quantization name; "*" for anything not listed
    tools: tuple[str, ...]  # packages whose versions shape the artifact (part of the export's id)


_FLOAT = Tolerance(max_abs_diff=1e-4, min_cosine=0.99999)
_FLOAT16 = Tolerance(max_abs_diff=2e-2, min_cosine=0.999)
# Integer artifacts: a healthy int8 MobileNet on 1000 ImageNet classes measured cosine 0.949 against its
# float source over 16 photos, collapsed ones 0.002-0.02; accuracy itself is the budget's job.
_INT8 = Tolerance(max_abs_diff=None, min_cosine=0.9)
_TFJS = {"none": Tolerance(1e-3, 0.9999), "float16": _FLOAT16, "uint16": Tolerance(None, 0.999), "*": _INT8}

FORMATS: dict[str, FormatInfo] = {
    "savedmodel": FormatInfo("converter.exports.savedmodel:export", "savedmodel", {"none": _FLOAT},
                             ("tensorflow",)),
    "tflite": FormatInfo("converter.exports.tflite:export", "tflite", {
        "none": _FLOAT, "float16": _FLOAT16, "dynamic_int8": _INT8, "int8": _INT8, "int16x8": Tolerance(None, 0.99)},
        ("tensorflow", "ai-edge-litert")),
    "onnx": FormatInfo("converter.exports.onnx:export", "onnx", {"none": _FLOAT, "dynamic_int8": _INT8, "int8": _INT8},
                       ("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
    "tfjs_graph": FormatInfo("converter.exports.tfjs:export_graph", "tfjs", _TFJS, ("tensorflow", "tensorflowjs")),
    "tfjs_layers": FormatInfo("converter.exports.tfjs:export_layers", "tfjs", _TFJS,
                              ("tensorflow", "tf-keras", "tensorflowjs")),
}


def load_symbol(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def exporter(fmt: str) -> Callable[..., Any]:
    return load_symbol(FORMATS[fmt].exporter)


def tolerance(fmt: str, quantization: str) -> Tolerance:
    table = FORMATS[fmt].tolerances
    return table.get(quantization) or table.get("*") or _INT8


def family(fmt: str) -> str:
    """The format family: tfjs_graph and tfjs_layers are both 'tfjs'."""
    return FORMATS[fmt].family if fmt in FORMATS else fmt


def open_runtime(backend: str, fmt: str, path, threads: int | None = None):
    """Make (not yet load) the runtime adapter for an artifact folder of format `fmt` (see converter.backends)."""
    from converter.backends import open_runtime as open_backend

    return open_backend(backend, fmt, path, threads)
