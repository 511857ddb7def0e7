"""TF.js in headless Chromium: the webgl, wasm (SIMD and threads), cpu and webgpu backends of a browser.

The adapter starts a Node.js driver (js/browser.cjs) that speaks the same framed stdin/stdout protocol
as the Node runner (see tfjs.py). The driver serves the page (js/page/), the TF.js bundles of the
installed node_modules and the artifact folder from a loopback HTTP server with the cross-origin
isolation headers (COOP/COEP) that wasm threads need, launches Chromium with playwright-core over a
pipe, and forwards each call to the page. Latency is timed inside the page with performance.now().

Chromium comes from the OS (`apt-get install -y chromium`): $CONVERT_CHROMIUM, else `chromium` or
`chromium-browser` on PATH. Where there is none, or the browser offers no WebGPU, load() raises
BackendUnavailable, which the toolkit reports as a skipped row. $CONVERT_CHROMIUM_FLAGS adds flags
(space-separated), for example `--use-angle=vulkan` on a machine with a GPU; $CONVERT_TFJS_FLAGS sets
TF.js flags in the page (a JSON object, for example '{"WEBGL_FORCE_F16_TEXTURES": true}').
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from converter.errors import BackendUnavailable, ConversionError, DependencyError
from converter.runtimes import tfjs
from converter.runtimes.lifetime import die_with_parent

DRIVER = tfjs.JS_DIR / "browser.cjs"
CHROMIUM_ENV = "CONVERT_CHROMIUM"
FLAGS_ENV = "CONVERT_CHROMIUM_FLAGS"
TFJS_FLAGS_ENV = "CONVERT_TFJS_FLAGS"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_CHROMIUM = "apt-get install -y chromium"
BACKENDS = ("webgl", "wasm", "cpu", "webgpu")
_PACKAGES = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@tensorflow/tfjs-backend-webgpu", "playwright-core")
_UNAVAILABLE = "unavailable: "
_TMP_PREFIX = "convert-browser-"  # the driver's prefix for "this browser cannot offer the backend"


def find_chromium() -> str:
    """The Chromium executable: $CONVERT_CHROMIUM, else the first of CHROMIUM_NAMES on PATH.

    Raises BackendUnavailable naming the command that installs it.
    """
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        path = Path(override).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise BackendUnavailable(f"Chromium not found: {CHROMIUM_ENV}={override} is not an executable file; "
                                 f"install Chromium with `{INSTALL_CHROMIUM}` or point {CHROMIUM_ENV} at one")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BackendUnavailable(f"Chromium not found ({' or '.join(CHROMIUM_NAMES)} on PATH, or {CHROMIUM_ENV}): "
                             f"install it with `{INSTALL_CHROMIUM}`")


def remove_stale_folders() -> None:
    """Remove the profile folders of runtimes whose Python process is gone (killed before close())."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = folder.name[len(_TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def extra_flags() -> list[str]:
    """Chromium flags added from $CONVERT_CHROMIUM_FLAGS (space-separated)."""
    return os.environ.get(FLAGS_ENV, "").split()


def tfjs_flags() -> dict[str, Any]:
    """TF.js flags set in the page before the backend starts, from $CONVERT_TFJS_FLAGS (a JSON object)."""
    text = os.environ.get(TFJS_FLAGS_ENV, "").strip()
    if not text:
        return {}
    try:
        flags = json.loads(text)
    except json.JSONDecodeError as err:
        raise DependencyError(f"{TFJS_FLAGS_ENV} must be a JSON object such as '{{\"WEBGL_PACK\": false}}': {err}") from None
    if not isinstance(flags, dict):
        raise DependencyError(f"{TFJS_FLAGS_ENV} must be a JSON object such as '{{\"WEBGL_PACK\": false}}', not {text}")
    return flags


class BrowserRuntime(tfjs.TfjsRuntime):
    """A TF.js graph or layers model run by headless Chromium on one TF.js backend.

    `threads` applies to wasm (the XNNPACK thread pool, real threads under cross-origin isolation);
    `simd=False` loads the plain .wasm build instead of the SIMD one (that build has no threads).
    """

    def __init__(self, path: Path, threads: Optional[int] = None, fmt: str = "tfjs_graph", backend: str = "webgl",
                 simd: bool = True):
        # TfjsRuntime.__init__ checks for the Node backends; the state it sets up is the same
        super(tfjs.TfjsRuntime, self).__init__(path, threads, fmt)
        if fmt not in tfjs._MODEL_TYPES:
            raise ValueError(f"BrowserRuntime runs {', '.join(tfjs._MODEL_TYPES)}, not '{fmt}'")
        if backend not in BACKENDS:
            raise ValueError(f"browser backend must be one of {', '.join(BACKENDS)}, not '{backend}'")
        if not simd and backend != "wasm":
            raise ValueError("simd=False applies to the wasm backend only")
        self.tfjs_backend = backend
        self.simd = simd
        self.backend = f"browser-{backend}" + ("" if simd else "-nosimd")
        self.model_type = tfjs._MODEL_TYPES[fmt]
        self.info: dict[str, Any] = {}
        self._version: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._tmp: Optional[str] = None

    # -- lifecycle --------------------------------------------------------------------------
    def load(self) -> None:
        """Start the driver, the page server and Chromium, and load the artifact in the page."""
        if self._proc is not None:
            return
        chromium = find_chromium()
        flags, page_flags = extra_flags(), tfjs_flags()
        node = tfjs.find_node()
        try:
            node_modules = tfjs.find_node_modules(_PACKAGES)
        except DependencyError as err:
            raise BackendUnavailable(f"the browser driver's npm packages are missing: {err}") from None
        # Chromium's throw-away profile (made by playwright-core) goes here; close() removes it
        remove_stale_folders()
        self._tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        env = {**os.environ, "TMPDIR": self._tmp,
               "NODE_PATH": os.pathsep.join(filter(None, [str(node_modules), os.environ.get("NODE_PATH")]))}
        self._proc = subprocess.Popen([node, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, **die_with_parent())
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            self.info, _ = self._call({"cmd": "load", "path": str(self.path.resolve()), "model_type": self.model_type,
                                       "backend": self.tfjs_backend, "threads": self.threads, "simd": self.simd,
                                       "chromium": chromium, "flags": flags, "tfjs_flags": page_flags})
            self._version = self._call({"cmd": "describe"})[0]["tfjs_version"]
        except tfjs._RunnerError as err:
            self.close()
            text = str(err)
            if text.startswith(_UNAVAILABLE):
                raise BackendUnavailable(f"{self.backend} is not available here: {text[len(_UNAVAILABLE):]}") from None
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) cannot load the {self.model_type} model: "
                                  f"{tfjs.explain_load_error(text, self.model_type)}") from None
        except BaseException:
            self.close()
            raise
        self._name_io()

    def close(self) -> None:
        """Quit the driver (which closes Chromium and the page server), then remove the profile folder."""
        try:
            super().close()
        finally:
            tmp, self._tmp = self._tmp, None
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    # -- Runtime ----------------------------------------------------------------------------
    def time(self, inputs: list[np.ndarray], schedule: dict[str, Any]) -> dict[str, Any]:
        """Time inference inside the page (performance.now(); predict/execute + awaited data() of every output).

        Same schedule keys and reply as TfjsRuntime.time, plus 'memory': tf.memory() ({numBytes,
        numTensors, ...}) 'after_warmup' and 'after_timed'.
        """
        unknown = set(schedule) - set(tfjs._DEFAULT_SCHEDULE)
        if unknown:
            raise ValueError(f"unknown schedule keys: {', '.join(sorted(unknown))}")
        try:
            reply, _ = self._call({"cmd": "time", **tfjs._DEFAULT_SCHEDULE, **schedule}, self._wire_inputs(inputs))
        except tfjs._RunnerError as err:
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) failed to run the model: {err}") from None
        return {"latencies_ms": reply["latencies_ms"], "warmup_runs": reply["warmup_runs"], "memory": reply["memory"],
                "load": {"load_ms": self.info.get("load_ms"), "settings": self.info.get("settings")}}

    def describe(self) -> dict[str, Any]:
        """{'backend', 'runtime': 'tfjs-browser', 'version', 'settings': {...in force, 'browser': {...}}}."""
        return {"backend": self.backend, "runtime": "tfjs-browser", "version": self._version,
                "settings": {**(self.info.get("settings") or {}), "threads_requested": self.threads,
                             "browser": self.info.get("browser")}}

    def memory(self) -> dict[str, Any]:
        """tf.memory() in the page now."""
        return self._call({"cmd": "describe"})[0]["memory"]

    def pids(self) -> list[int]:
        """The driver's pid (for tests and watchdogs); Chromium's processes are its descendants."""
        return [self._proc.pid] if self._proc is not None else []


def probe() -> None:
    """Raise BackendUnavailable (with the command that installs it) when Chromium, Node.js or the driver's npm
    packages are missing."""
    find_chromium()
    tfjs.find_node()
    try:
        tfjs.find_node_modules(_PACKAGES)
    except DependencyError as err:
        raise BackendUnavailable(f"the browser driver's npm packages are missing: {err}") from None


_VERSIONS: dict[str, str] = {}


def browser_versions() -> dict[str, str]:
    """The Chromium and TF.js versions that shape a browser row (part of check and latency ids)."""
    if not _VERSIONS:
        _VERSIONS.update(tfjs.runner_versions())
        try:
            done = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True, timeout=30)
            _VERSIONS["chromium"] = done.stdout.strip() or "unknown"
        except (BackendUnavailable, OSError, subprocess.TimeoutExpired):
            _VERSIONS["chromium"] = "unavailable"
    return dict(_VERSIONS)
