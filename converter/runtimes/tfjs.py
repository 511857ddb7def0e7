"""TF.js runtime: a Node.js process (js/runner.cjs) runs the artifact on the cpu or wasm backend.

Python talks to the runner over its stdin/stdout: each message is a 4-byte little-endian length,
a JSON header, then the raw bytes of the tensors the header lists (dtype, shape, nbytes).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from converter.errors import ConversionError, DependencyError
from converter.runtimes.base import Runtime, TensorInfo
from converter.runtimes.lifetime import die_with_parent

JS_DIR = Path(__file__).resolve().parent / "js"
RUNNER = JS_DIR / "runner.cjs"
NODE_MODULES_ENV = "CONVERT_NODE_MODULES"
_PACKAGES = {"cpu": ("@tensorflow/tfjs",), "wasm": ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")}
_MODEL_TYPES = {"tfjs_graph": "graph", "tfjs_layers": "layers"}
_WIRE_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_DEFAULT_SCHEDULE = {"warmup_runs": 10, "warmup_seconds": 1.0, "min_runs": 50, "min_seconds": 2.0,
                     "max_runs": 100000, "max_seconds": 20.0}


CALL_TIMEOUT_S = float(os.environ.get("CONVERT_TFJS_TIMEOUT", "900"))  # one load/run/time call, at most


def find_node_modules(packages: tuple[str, ...] = _PACKAGES["wasm"]) -> Path:
    """The node_modules folder holding `packages`: $CONVERT_NODE_MODULES, next to runner.cjs, or above the cwd.

    Raises DependencyError with the install command when none has them.
    """
    override = os.environ.get(NODE_MODULES_ENV)
    if override:
        folder = Path(override).expanduser().resolve()
        missing = [p for p in packages if not (folder / p / "package.json").is_file()]
        if missing:
            raise DependencyError(f"{NODE_MODULES_ENV}={override} lacks {', '.join(missing)}: "
                                  f"run `npm ci --prefix {JS_DIR}` (or `make install`) and unset {NODE_MODULES_ENV}")
        return folder
    candidates = [JS_DIR / "node_modules"]
    for parent in [Path.cwd(), *Path.cwd().parents]:
        candidates += [parent / "node_modules", parent / "converter" / "runtimes" / "js" / "node_modules"]
    for folder in candidates:
        if all((folder / p / "package.json").is_file() for p in packages):
            return folder
    raise DependencyError(f"the TF.js packages {', '.join(packages)} are not installed: "
                          f"run `npm ci --prefix {JS_DIR}` (or `make install`), or set {NODE_MODULES_ENV} to a node_modules folder that has them")


def find_node() -> str:
    """Path of the `node` executable, or DependencyError."""
    node = shutil.which("node")
    if node is None:
        raise DependencyError(f"Node.js (`node`) is not on PATH: install Node.js 20, then run `npm ci --prefix {JS_DIR}` (or `make install`)")
    return node


def probe() -> None:
    """Raise DependencyError (with the install command) when Node.js or the TF.js packages are missing."""
    find_node()
    find_node_modules()


def runner_versions() -> dict[str, str]:
    """The TF.js and Node.js versions the runner really loads, from its own describe reply."""
    try:
        probe()
    except DependencyError:
        return {"@tensorflow/tfjs": "unavailable"}
    runtime = TfjsRuntime(Path("."), fmt="tfjs_graph", backend="wasm")
    runtime.start()
    try:
        reply, _ = runtime._call({"cmd": "describe"})
    except (_RunnerError, ConversionError):
        return {"@tensorflow/tfjs": "unavailable"}
    finally:
        runtime.close()
    return {"@tensorflow/tfjs": reply.get("tfjs_version", "unknown"), "node": reply.get("node_version", "unknown")}


def _graph_tensors(topology: dict[str, Any]) -> list[TensorInfo]:
    nodes = topology["node"]
    constants = {n["name"] for n in nodes if n["op"] == "Const"}
    tensors = []
    for node in nodes:
        if node["op"] == "Const":
            continue
        sources = [i.split(":")[0] for i in node.get("input", []) if not i.startswith("^")]
        op = "input" if node["op"] == "Placeholder" else node["op"]
        tensors.append(TensorInfo(node["name"], op, tuple(s for s in sources if s not in constants),
                                  tuple(s for s in sources if s in constants), node["name"]))
    return _producers_first(tensors)


def _layer_tensors(model_config: dict[str, Any], weights: list[str]) -> list[TensorInfo]:
    tensors = []
    layers = model_config["config"]["layers"]
    previous = None
    for layer in layers:
        name = layer["config"]["name"]
        if "inbound_nodes" in layer:
            inbound = [i[0] for node in layer["inbound_nodes"][:1] for i in node if isinstance(i, list)]
        else:  # Sequential: each layer reads the one before
            inbound = [previous] if previous else []
        own = tuple(w for w in weights if w.startswith(name + "/"))
        op = "input" if layer["class_name"] == "InputLayer" else layer["class_name"]
        tensors.append(TensorInfo(name, op, tuple(inbound), own, name))
        previous = name
    return tensors


def _producers_first(tensors: list[TensorInfo]) -> list[TensorInfo]:
    """A topological order (model.json lists nodes in no promised order), stable otherwise."""
    by_name = {t.name: t for t in tensors}
    done: set[str] = set()
    order: list[TensorInfo] = []

    def visit(name: str) -> None:
        stack = [(name, False)]
        while stack:
            current, expanded = stack.pop()
            if current in done or current not in by_name:
                continue
            if expanded:
                done.add(current)
                order.append(by_name[current])
                continue
            stack.append((current, True))
            stack.extend((i, False) for i in reversed(by_name[current].inputs) if i not in done)

    for tensor in tensors:
        visit(tensor.name)
    return order


def _tensor(name: str) -> str:
    """'Identity:0' and 'Identity' name the same tensor."""
    return name[:-2] if name.endswith(":0") else name


def explain_load_error(message: str, model_type: str) -> str:
    """TF.js's own message, with what to change where the cause is known (docs/troubleshooting.md)."""
    from converter.exports.tfjs import layers_load_hint

    hint = layers_load_hint(message) if model_type == "layers" else ""
    return f"{message}{hint}"


class _RunnerError(Exception):
    """The runner answered {error: message}."""


class TfjsRuntime(Runtime):
    """A TF.js graph or layers model run by Node.js on the 'cpu' or 'wasm' backend."""

    def __init__(self, path: Path, threads: Optional[int] = None, fmt: str = "tfjs_graph", backend: str = "cpu"):
        super().__init__(path, threads, fmt)
        if fmt not in _MODEL_TYPES:
            raise ValueError(f"TfjsRuntime runs {', '.join(_MODEL_TYPES)}, not '{fmt}'")
        if backend not in _PACKAGES:
            raise ValueError(f"TF.js backend must be 'cpu' or 'wasm', not '{backend}'")
        self.tfjs_backend = backend
        self.backend = f"tfjs-{backend}"
        self.model_type = _MODEL_TYPES[fmt]
        self.info: dict[str, Any] = {}  # the runner's load reply: model_inputs, model_outputs, user_metadata, settings, load_ms
        self._version: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the runner process (no model yet)."""
        node = find_node()
        node_modules = find_node_modules(_PACKAGES[self.tfjs_backend])
        env = {**os.environ, "NODE_PATH": os.pathsep.join(filter(None, [str(node_modules), os.environ.get("NODE_PATH")]))}
        # the runner dies with this process (kill -9 included), and it exits by itself when its stdin closes
        self._proc = subprocess.Popen([node, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, **die_with_parent())
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def load(self) -> None:
        """Start the runner and load the artifact; ConversionError carries TF.js's own message."""
        if self._proc is not None:
            return
        self.start()
        try:
            self.info, _ = self._call({"cmd": "load", "path": str(self.path.resolve()), "model_type": self.model_type,
                                       "backend": self.tfjs_backend, "threads": self.threads})
            self._version = self._call({"cmd": "describe"})[0]["tfjs_version"]
        except _RunnerError as err:
            self.close()
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) cannot load the {self.model_type} model: "
                                  f"{explain_load_error(str(err), self.model_type)}") from None
        self._name_io()

    def _name_io(self) -> None:
        """input_names/output_names in the runner's order, as the SavedModel signature names them: a graph model's
        model.json maps each signature key to its tensor; a layers model's inputs and outputs are its input and
        output layers, which name the signature's keys."""
        inputs = [i["name"] for i in self.info.get("model_inputs", [])]
        outputs = [o["name"] for o in self.info.get("model_outputs", [])]
        try:
            model_json = json.loads((self.path / "model.json").read_text())
        except (OSError, ValueError):
            model_json = {}
        if self.model_type == "graph":
            signature = model_json.get("signature") or {}

            def keys(part: str) -> dict[str, str]:
                return {_tensor(v.get("name", k)): k for k, v in (signature.get(part) or {}).items()}

            by_input, by_output = keys("inputs"), keys("outputs")
            self.input_names = [by_input.get(_tensor(n), n) for n in inputs]
            self.output_names = [by_output.get(_tensor(n), n) for n in outputs]
            return
        config = (model_json.get("modelTopology") or {}).get("model_config", {}).get("config", {})
        if isinstance(config, dict) and config.get("input_layers") and config.get("output_layers"):
            self.input_names = [layer[0] for layer in config["input_layers"]]
            self.output_names = [layer[0] for layer in config["output_layers"]]
        else:  # a Sequential model: one input and one output
            self.input_names, self.output_names = inputs, outputs

    def close(self) -> None:
        """Ask the runner to quit; kill it if it does not."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._write(proc, {"cmd": "quit"}, [])
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()

    # -- Runtime ----------------------------------------------------------------------------
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run one batch; outputs come back as float32 arrays in the model's output order."""
        try:
            _, outputs = self._call({"cmd": "run"}, self._wire_inputs(inputs))
        except _RunnerError as err:
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) failed to run the model: {err}") from None
        return [o.astype(np.float32, copy=False) for o in outputs]

    def time(self, inputs: list[np.ndarray], schedule: dict[str, Any]) -> dict[str, Any]:
        """Time inference inside Node (process.hrtime, every output read back with data()).

        `schedule` holds warmup_runs, warmup_seconds, min_runs, min_seconds, max_runs, max_seconds
        (missing keys take the recipe defaults). Returns {'latencies_ms', 'warmup_runs', 'load'}.
        """
        unknown = set(schedule) - set(_DEFAULT_SCHEDULE)
        if unknown:
            raise ValueError(f"unknown schedule keys: {', '.join(sorted(unknown))}")
        try:
            reply, _ = self._call({"cmd": "time", **_DEFAULT_SCHEDULE, **schedule}, self._wire_inputs(inputs))
        except _RunnerError as err:
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) failed to run the model: {err}") from None
        return {"latencies_ms": reply["latencies_ms"], "warmup_runs": reply["warmup_runs"],
                "peak_rss_mb": reply.get("peak_rss_mb"),
                "load": {"load_ms": self.info.get("load_ms"), "settings": self.info.get("settings")}}

    def describe(self) -> dict[str, Any]:
        """{'backend', 'runtime': 'tfjs', 'version', 'settings': {backend, simd, threads, ...}}."""
        return {"backend": self.backend, "runtime": "tfjs", "version": self._version,
                "settings": {**(self.info.get("settings") or {}), "threads_requested": self.threads}}

    def tensors(self) -> list[TensorInfo]:
        """Graph models: every node but the constants, in model.json order (producers first, as the converter
        writes them); layers models: every layer, its weights named as model.json's manifest names them."""
        model = json.loads((self.path / "model.json").read_text())
        topology = model["modelTopology"]
        if self.model_type == "graph":
            return _graph_tensors(topology)
        weights = [w["name"] for group in model["weightsManifest"] for w in group["weights"]]
        return _layer_tensors(topology["model_config"], weights)

    def intermediates(self, inputs: list[np.ndarray], names, feeds=None) -> dict[str, np.ndarray]:
        """Graph models: the named nodes' outputs (model.execute), `feeds` naming the nodes the inputs stand for;
        layers models: the named layers' outputs (a sub-model), or with `feeds` one layer applied to the inputs."""
        header: dict[str, Any] = {"cmd": "intermediates", "names": list(names)}
        arrays = self._wire_inputs(inputs) if feeds is None else [np.ascontiguousarray(a, dtype=np.float32) for a in inputs]
        if feeds is not None:
            header["feeds"] = list(feeds)
        try:
            reply, outputs = self._call(header, arrays)
        except _RunnerError as err:
            raise ConversionError(f"{self.path}: TF.js ({self.backend}) cannot read {', '.join(names)[:200]}: {err}") from None
        return {spec["name"]: (o.astype(np.float32) if o.dtype == np.float32 else o)
                for spec, o in zip(reply["outputs"], outputs)}

    @property
    def user_metadata(self) -> Optional[dict[str, Any]]:
        """The model's userDefinedMetadata as TF.js read it."""
        return self.info.get("user_metadata")

    # -- protocol ---------------------------------------------------------------------------
    def _wire_inputs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Cast each input to the dtype the model declares (float32, int32 or bool)."""
        declared = [i.get("dtype") for i in self.info.get("model_inputs", [])]
        arrays = []
        for index, array in enumerate(inputs):
            array = np.asarray(array)
            dtype = declared[index] if index < len(declared) and declared[index] in _WIRE_DTYPES else (
                "int32" if np.issubdtype(array.dtype, np.integer) else "bool" if array.dtype == np.bool_ else "float32")
            arrays.append(np.ascontiguousarray(array, dtype=_WIRE_DTYPES[dtype]))
        return arrays

    def _call(self, header: dict[str, Any], arrays: Optional[list[np.ndarray]] = None) -> tuple[dict[str, Any], list[np.ndarray]]:
        if self._proc is None:
            raise RuntimeError("TfjsRuntime: call load() first")
        # a runner that hangs is killed, so the read below ends and reports how the runner ended
        watchdog = threading.Timer(CALL_TIMEOUT_S, self._proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._exchange(header, arrays)
        finally:
            watchdog.cancel()

    def _exchange(self, header: dict[str, Any], arrays: Optional[list[np.ndarray]]) -> tuple[dict[str, Any], list[np.ndarray]]:
        try:
            self._write(self._proc, header, arrays or [])
        except BrokenPipeError:
            pass  # the runner is gone: reading its reply reports how it ended
        reply = self._read_header()
        if "error" in reply:
            raise _RunnerError(reply["error"])
        outputs = []
        for spec in reply.get("outputs", []):
            data = self._read_exact(spec["nbytes"])
            outputs.append(np.frombuffer(data, dtype=_WIRE_DTYPES[spec["dtype"]]).reshape(spec["shape"]))
        return reply, outputs

    @staticmethod
    def _write(proc: subprocess.Popen, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if arrays:
            header = {**header, "inputs": [{"dtype": a.dtype.name, "shape": list(a.shape), "nbytes": a.nbytes} for a in arrays]}
        body = json.dumps(header).encode("utf-8")
        assert proc.stdin is not None
        proc.stdin.write(struct.pack("<I", len(body)) + body)
        for array in arrays:
            proc.stdin.write(memoryview(array).cast("B"))
        proc.stdin.flush()

    def _read_header(self) -> dict[str, Any]:
        (length,) = struct.unpack("<I", self._read_exact(4))
        return json.loads(self._read_exact(length))

    def _read_exact(self, n: int) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        data = self._proc.stdout.read(n)
        if data is None or len(data) < n:
            code = self._proc.wait()
            tail = " | ".join(self._stderr) or "no output"
            self._proc = None
            raise ConversionError(f"{self.path}: the TF.js runner ({self.backend}) exited with code {code}: {tail}")
        return data

    def _drain_stderr(self) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        for line in proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)
