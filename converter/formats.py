"""The one table of formats: which exporter makes each, which backends run it, and its parity tolerances."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from converter.exports.base import Tolerance


@dataclass(frozen=True)
class FormatInfo:
    exporter: str  # "module:function"
    backends: tuple[str, ...]
    tolerances: dict[str, Tolerance]  # by quantization name; "*" for anything not listed


_FLOAT = Tolerance(max_abs_diff=1e-4, min_cosine=0.99999)
_FLOAT16 = Tolerance(max_abs_diff=2e-2, min_cosine=0.999)
# Integer artifacts: a healthy int8 MobileNet on 1000 ImageNet classes measured cosine 0.949 against its
# float source over 16 photos, collapsed ones 0.002-0.02; accuracy itself is the budget's job.
_INT8 = Tolerance(max_abs_diff=None, min_cosine=0.9)
_UINT8_WEIGHTS = Tolerance(max_abs_diff=None, min_cosine=0.9)

# [browser] TF.js in headless Chromium (converter/runtimes/browser.py); wasm-nosimd is the plain .wasm build.
BROWSER_BACKENDS = ("browser-webgl", "browser-wasm", "browser-wasm-nosimd", "browser-cpu", "browser-webgpu")

FORMATS: dict[str, FormatInfo] = {
    "savedmodel": FormatInfo("converter.exports.savedmodel:export", ("tf",), {"none": _FLOAT}),
    "tflite": FormatInfo("converter.exports.tflite:export", ("tflite",), {
        "none": _FLOAT, "float16": _FLOAT16, "dynamic_int8": _INT8, "int8": _INT8, "int16x8": Tolerance(None, 0.99)}),
    "onnx": FormatInfo("converter.exports.onnx:export", ("onnxruntime",), {
        "none": _FLOAT, "dynamic_int8": _INT8, "int8": _INT8}),
    "tfjs_graph": FormatInfo("converter.exports.tfjs:export_graph", ("tfjs-cpu", "tfjs-wasm", *BROWSER_BACKENDS), {
        "none": Tolerance(1e-3, 0.9999), "float16": _FLOAT16, "uint16": Tolerance(None, 0.999), "*": _UINT8_WEIGHTS}),
    "tfjs_layers": FormatInfo("converter.exports.tfjs:export_layers", ("tfjs-cpu", "tfjs-wasm", *BROWSER_BACKENDS), {
        "none": Tolerance(1e-3, 0.9999), "float16": _FLOAT16, "uint16": Tolerance(None, 0.999), "*": _UINT8_WEIGHTS}),
}

# backend -> ("module:Class", extra constructor keywords)
RUNTIMES: dict[str, tuple[str, dict[str, Any]]] = {
    "tf": ("converter.runtimes.tf_runtime:TFRuntime", {}),
    "tflite": ("converter.runtimes.tflite_runtime:TFLiteRuntime", {}),
    "onnxruntime": ("converter.runtimes.onnx_runtime:OnnxRuntime", {}),
    "tfjs-cpu": ("converter.runtimes.tfjs:TfjsRuntime", {"backend": "cpu"}),
    "tfjs-wasm": ("converter.runtimes.tfjs:TfjsRuntime", {"backend": "wasm"}),
    # [browser]
    "browser-webgl": ("converter.runtimes.browser:BrowserRuntime", {"backend": "webgl"}),
    "browser-wasm": ("converter.runtimes.browser:BrowserRuntime", {"backend": "wasm"}),
    "browser-wasm-nosimd": ("converter.runtimes.browser:BrowserRuntime", {"backend": "wasm", "simd": False}),
    "browser-cpu": ("converter.runtimes.browser:BrowserRuntime", {"backend": "cpu"}),
    "browser-webgpu": ("converter.runtimes.browser:BrowserRuntime", {"backend": "webgpu"}),
}


def load_symbol(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def exporter(fmt: str) -> Callable[..., Any]:
    return load_symbol(FORMATS[fmt].exporter)


def tolerance(fmt: str, quantization: str) -> Tolerance:
    table = FORMATS[fmt].tolerances
    return table.get(quantization) or table.get("*") or _INT8


def open_runtime(backend: str, fmt: str, path: Path, threads: int | None = None):
    """Make (not yet load) the runtime adapter for an artifact folder of format `fmt`."""
    target, extra = RUNTIMES[backend]
    cls = load_symbol(target)
    return cls(Path(path), threads=threads, fmt=fmt, **extra)
