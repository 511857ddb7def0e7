"""The one table of backends: which runtime adapter runs each, on which formats, and how it is timed.

Adding a backend is one entry here plus its adapter (converter/runtimes/). The recipe schema, the generated
reference, the plan and the renderers derive their lists from this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from converter.formats import load_symbol


@dataclass(frozen=True)
class BackendInfo:
    runtime: str  # "module:Class" of the adapter (converter.runtimes.base.Runtime)
    formats: tuple[str, ...]  # artifact formats it runs
    target: str  # where such artifacts are deployed: 'server', 'mobile' or 'web'
    options: dict[str, Any] = field(default_factory=dict)  # extra constructor keywords of the adapter
    single_threaded: bool = False  # its speed does not depend on a thread count: timed once, at 1 thread
    timed_in: str = "python"  # 'python': timed around run() in the worker; else the adapter times itself (Runtime.time)
    version: str = ""  # "module:function" returning {tool: version} that shape its results; "" = its package
    package: str = ""  # the Python package that is the runtime
    library: str = ""  # module the latency worker imports before loading the model ("module:function" to call it)
    probe: str = ""  # "module:function" raising DependencyError when the backend cannot run on this machine
    default: bool = True  # run when a recipe names no backends; False: only when a recipe asks for it
    # evaluation samples at most (None: every one): a slow backend checks a subset, and the report says so;
    # the recipe's verify.backend_limits overrides it
    eval_samples: Optional[int] = None


BACKENDS: dict[str, BackendInfo] = {
    "tf": BackendInfo("converter.runtimes.tf_runtime:TFRuntime", ("savedmodel",), "server", package="tensorflow",
                      library="converter.tf_env:tf"),
    "tflite": BackendInfo("converter.runtimes.tflite_runtime:TFLiteRuntime", ("tflite",), "mobile",
                          package="ai-edge-litert", library="ai_edge_litert.interpreter"),
    "onnxruntime": BackendInfo("converter.runtimes.onnx_runtime:OnnxRuntime", ("onnx",), "server",
                               package="onnxruntime", library="onnxruntime"),
    # TF.js's plain-JavaScript kernels: about 110 s per ResNet50V2 (96x96) artifact on 48 samples, where wasm runs
    # the same artifact's evaluation in seconds; it evaluates the first 16 samples (its parity samples)
    "tfjs-cpu": BackendInfo("converter.runtimes.tfjs:TfjsRuntime", ("tfjs_graph", "tfjs_layers"), "web",
                            {"backend": "cpu"}, single_threaded=True, timed_in="node", eval_samples=16,
                            version="converter.runtimes.tfjs:runner_versions", probe="converter.runtimes.tfjs:probe"),
    # TF.js 4.22's wasm build in Node 20 has no thread support (WASM_HAS_MULTITHREAD_SUPPORT false): one thread
    "tfjs-wasm": BackendInfo("converter.runtimes.tfjs:TfjsRuntime", ("tfjs_graph", "tfjs_layers"), "web",
                             {"backend": "wasm"}, single_threaded=True, timed_in="node",
                             version="converter.runtimes.tfjs:runner_versions", probe="converter.runtimes.tfjs:probe"),
}
# TF.js in the OS's headless Chromium (converter/runtimes/browser.py), driven by playwright-core over a page served
# from loopback with cross-origin isolation. Without a GPU, WebGL and WebGPU run in software (SwiftShader).
_BROWSER = dict(runtime="converter.runtimes.browser:BrowserRuntime", formats=("tfjs_graph", "tfjs_layers"), target="web",
                timed_in="browser", version="converter.runtimes.browser:browser_versions",
                probe="converter.runtimes.browser:probe")
BACKENDS.update({
    "browser-webgl": BackendInfo(**_BROWSER, options={"backend": "webgl"}, single_threaded=True),
    "browser-wasm": BackendInfo(**_BROWSER, options={"backend": "wasm"}),  # SIMD, and real threads
    # the plain .wasm build: no SIMD, no threads; opt-in, to see what SIMD buys
    "browser-wasm-nosimd": BackendInfo(**_BROWSER, options={"backend": "wasm", "simd": False}, single_threaded=True,
                                       default=False),
    "browser-cpu": BackendInfo(**_BROWSER, options={"backend": "cpu"}, single_threaded=True, default=False,
                               eval_samples=16),
    # 174 ms per MobileNet v1 0.25 inference in SwiftShader, 4 s to its first: opt-in where there is no GPU
    "browser-webgpu": BackendInfo(**_BROWSER, options={"backend": "webgpu"}, single_threaded=True, default=False),
})
TARGETS = ("server", "mobile", "web")


def names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def for_format(fmt: str, defaults_only: bool = False) -> tuple[str, ...]:
    """Every backend that runs artifacts of format `fmt` (or only those run by default), in table order."""
    return tuple(name for name, info in BACKENDS.items() if fmt in info.formats and (info.default or not defaults_only))


def open_runtime(backend: str, fmt: str, path: Path, threads: Optional[int] = None):
    """Make (not yet load) the runtime adapter for an artifact folder of format `fmt`."""
    info = BACKENDS[backend]
    cls = load_symbol(info.runtime)
    return cls(Path(path), threads=threads, fmt=fmt, **info.options)


def unavailable(backend: str) -> Optional[str]:
    """Why `backend` cannot run on this machine (with the command that fixes it), or None when it can."""
    from converter.errors import BackendUnavailable, DependencyError

    info = BACKENDS[backend]
    try:
        if info.probe:
            load_symbol(info.probe)()
        elif info.package:
            import importlib.util

            module = {"ai-edge-litert": "ai_edge_litert"}.get(info.package, info.package)
            if importlib.util.find_spec(module) is None:
                raise DependencyError(f"the Python package {info.package} is not installed: run `make install`")
    except (DependencyError, BackendUnavailable) as error:
        return str(error)
    return None


_VERSIONS: dict[str, dict[str, str]] = {}


def versions(backend: str) -> dict[str, str]:
    """The versions of the tools that shape this backend's results (part of check and latency ids), once per process."""
    if backend not in _VERSIONS:
        info = BACKENDS[backend]
        if info.version:
            _VERSIONS[backend] = dict(load_symbol(info.version)())
        else:
            from converter.versions import package_version

            _VERSIONS[backend] = {info.package: package_version(info.package)}
    return _VERSIONS[backend]
