"""TF.js in headless Chromium: real Chromium, real TF.js 4.22, tiny models exported by the real converter.

One browser per (backend, format) for the whole module. Chromium comes from the OS (`make test` installs
it as root); where it cannot be had the module skips with the install command, except in CI, where a
missing Chromium fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import converter.tf_env  # noqa: F401  (legacy Keras before TensorFlow loads)
from converter.benchmark.findings import findings
from converter.benchmark.measure import measure
from converter.benchmark.schedule import Timing
from converter.errors import BackendUnavailable, ConversionError
from converter.exports import tfjs as tfjs_export
from converter.exports.base import ExportContext
from converter.backends import for_format
from converter.formats import open_runtime, tolerance
from converter.model_ref import ModelRef
from converter.recipe.schema import TfjsGraphExport, TfjsLayersExport
from converter.runtimes import browser, tfjs

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("browser-webgl", "browser-wasm", "browser-wasm-nosimd", "browser-cpu", "browser-webgpu")
FORMATS_RUN = ("tfjs_graph", "tfjs_layers")
WASM_THREADS = 2  # asked of browser-wasm: more than 1, so that threads in force are visible
SHORT = {"warmup_runs": 2, "warmup_seconds": 0, "min_runs": 7, "min_seconds": 0, "max_runs": 7, "max_seconds": 60}


def _require_chromium() -> str:
    try:
        return browser.find_chromium()
    except BackendUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {err}")
        pytest.skip(str(err), allow_module_level=True)


CHROMIUM = _require_chromium()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny conv net (conv, depthwise conv, pooling, dense, softmax), its graph and layers exports, inputs, outputs."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((8, 8, 3))
    x = k.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k.layers.Softmax(name="probs")(k.layers.Dense(5, name="head")(x))
    keras_model = k.Model(inputs, outputs)
    root = tmp_path_factory.mktemp("browser")
    keras_model.save(str(root / "savedmodel"), save_format="tf")
    ref = ModelRef(root / "savedmodel", "keras")
    ctx = ExportContext(build_id="h", class_names=["a", "b", "c", "d", "e"])
    tfjs_export.export_graph(ref, TfjsGraphExport(name="g", format="tfjs_graph"), root / "tfjs_graph", ctx)
    tfjs_export.export_layers(ref, TfjsLayersExport(name="l", format="tfjs_layers"), root / "tfjs_layers", ctx)
    x = np.random.RandomState(0).rand(4, 8, 8, 3).astype(np.float32)
    return {"dir": root, "x": x, "expected": keras_model.predict(x, verbose=0)}


@pytest.fixture(scope="module", params=[(b, f) for b in BACKENDS for f in FORMATS_RUN], ids=lambda p: f"{p[0]}-{p[1]}")
def loaded(request, model):
    """A loaded runtime per (backend, format), shared by the tests below; browser-webgpu skips where it is not offered."""
    backend, fmt = request.param
    threads = WASM_THREADS if backend == "browser-wasm" else None
    runtime = open_runtime(backend, fmt, model["dir"] / fmt, threads)
    try:
        runtime.load()
    except BackendUnavailable as err:
        if backend == "browser-webgpu":
            pytest.skip(str(err))
        raise
    yield runtime
    runtime.close()


def test_outputs_match_keras_within_the_format_tolerance(loaded, model):
    out = loaded.run([model["x"]])[0]
    expected = model["expected"]
    tol = tolerance(loaded.fmt, "none")
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert np.abs(out - expected).max() <= tol.max_abs_diff
    cosine = (out * expected).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= tol.min_cosine
    assert loaded.user_metadata["convert"]["class_names"] == ["a", "b", "c", "d", "e"]


def test_describe_reports_what_is_in_force(loaded):
    described = loaded.describe()
    settings = described["settings"]
    assert described["backend"] == loaded.backend and described["runtime"] == "tfjs-browser"
    assert described["version"] == "4.22.0" and settings["browser"]["npm_packages"]["@tensorflow/tfjs"] == "4.22.0"
    chromium_version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    assert settings["browser"]["chromium_version"] in chromium_version
    assert "--no-sandbox" in settings["browser"]["flags"] and "--disable-background-networking" in settings["browser"]["flags"]
    assert settings["browser"]["launch_ms"] > 0
    assert settings["cross_origin_isolated"] is True
    expected_backend = loaded.backend.split("-")[1]
    assert settings["backend"] == expected_backend
    if loaded.backend == "browser-webgl":
        # the 1e-3 parity tolerance of float TF.js holds with float32 textures; half floats would not meet it
        assert settings["webgl_version"] == 2 and settings["render_float32_enabled"] is True
        assert settings["texture_float_bits"] == 32 and isinstance(settings["pack"], bool) and settings["renderer"]
    elif loaded.backend == "browser-wasm":
        assert settings["simd"] is True and settings["threads"] == WASM_THREADS
        assert settings["wasm_binary"] == "tfjs-backend-wasm-threaded-simd.wasm"
    elif loaded.backend == "browser-wasm-nosimd":
        assert settings["simd"] is False and settings["threads"] == 1 and settings["wasm_binary"] == "tfjs-backend-wasm.wasm"
    elif loaded.backend == "browser-webgpu":
        assert settings["adapter"]["vendor"] or settings["adapter"]["architecture"]


def test_time_runs_the_schedule_and_reports_memory(loaded, model):
    timing = loaded.time([model["x"][:1]], SHORT)
    assert len(timing["latencies_ms"]) == 7 and timing["warmup_runs"] == 2
    assert all(ms > 0 for ms in timing["latencies_ms"])
    before, after = timing["memory"]["after_warmup"], timing["memory"]["after_timed"]
    assert before["numTensors"] == after["numTensors"] > 0 and before["numBytes"] == after["numBytes"] > 0  # no leak
    # real tf.memory() readings: during the loop the one input tensor is alive on top of the model's weights
    now = loaded.memory()
    assert after["numTensors"] == now["numTensors"] + 1 and after["numBytes"] == now["numBytes"] + model["x"][:1].nbytes
    assert timing["load"]["load_ms"] > 0


def test_every_browser_backend_runs_both_tfjs_formats_and_is_a_recipe_backend():
    from typing import get_args

    from converter.recipe.schema import Backend

    for fmt in FORMATS_RUN:
        assert set(BACKENDS) <= set(for_format(fmt))
    assert set(BACKENDS) <= set(get_args(Backend))


def test_wasm_threads_follow_the_thread_count(model):
    with open_runtime("browser-wasm", "tfjs_graph", model["dir"] / "tfjs_graph", 1) as one:
        assert one.describe()["settings"]["threads"] == 1


def test_tfjs_flags_reach_the_page(model, monkeypatch):
    """Half-float WebGL textures (as on GPUs without float32 rendering) are reported as such."""
    monkeypatch.setenv(browser.TFJS_FLAGS_ENV, json.dumps({"WEBGL_FORCE_F16_TEXTURES": True}))
    with open_runtime("browser-webgl", "tfjs_graph", model["dir"] / "tfjs_graph") as runtime:
        settings = runtime.describe()["settings"]
        out = runtime.run([model["x"]])[0]
    assert settings["tfjs_flags"] == {"WEBGL_FORCE_F16_TEXTURES": True} and settings["texture_float_bits"] == 16
    assert np.abs(out - model["expected"]).max() > 1e-6  # half floats do change the numbers


# ------------------------------------------------------------------------------------------ missing Chromium
def test_missing_chromium_is_a_skipped_row_with_the_install_command(model, monkeypatch, tmp_path):
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(missing))
    with pytest.raises(BackendUnavailable, match="apt-get install -y chromium"):
        open_runtime("browser-webgl", "tfjs_graph", model["dir"] / "tfjs_graph").load()
    folder = model["dir"] / "tfjs_graph"
    from converter import api

    recipe = {"name": "nochromium", "model": {"path": str(model["dir"] / "savedmodel")},
              "exports": [{"name": "web", "format": "tfjs_graph"}]}
    skipped = api.plan(recipe).exports[0].skipped
    assert set(skipped) == {"browser-webgl", "browser-wasm"}  # the browser backends run by default
    assert all("apt-get install -y chromium" in why and str(missing) in why for why in skipped.values())
    row = measure(folder, "tfjs_graph", "browser-wasm", 1, 1, Timing(**SHORT), model["x"])
    assert "apt-get install -y chromium" in row["skipped"] and "error" in row  # an error row is never cached


def test_a_page_that_does_not_load_is_a_conversion_error(model, tmp_path):
    (tmp_path / "model.json").write_text("{\"format\": \"graph-model\"}")
    with pytest.raises(ConversionError, match="browser-cpu.*cannot load") as caught:
        open_runtime("browser-cpu", "tfjs_graph", tmp_path).load()
    assert not isinstance(caught.value, BackendUnavailable)


# ------------------------------------------------------------------------------------------ latency rows
def test_measure_times_in_the_page_with_threads_in_force(model):
    row = measure(model["dir"] / "tfjs_graph", "tfjs_graph", "browser-wasm", WASM_THREADS, 2,
                  Timing(**SHORT), model["x"])
    assert "error" not in row, row.get("error")
    assert row["n"] == 7 and row["warmup_runs"] == 2 and row["timed_in"] == "browser" and row["first_inference_ms"] > 0
    assert row["runtime"]["settings"]["threads"] == WASM_THREADS and row["memory"]["after_timed"]["numTensors"] > 0


def test_a_growing_tensor_count_is_a_finding():
    row = {"backend": "browser-webgl", "threads": 1, "batch": 1, "p50_ms": 1.0, "n": 50,
           "memory": {"after_warmup": {"numTensors": 12, "numBytes": 400}, "after_timed": {"numTensors": 62, "numBytes": 2400}}}
    steady = {**row, "memory": {"after_warmup": row["memory"]["after_warmup"], "after_timed": row["memory"]["after_warmup"]}}
    artifact = {"name": "m", "format": "tfjs_graph", "quantization": "none", "latency": [row]}
    found = findings({"artifacts": [artifact]})
    assert len(found) == 1 and "leaks tensors" in found[0] and "12" in found[0] and "62" in found[0] and "1 per run" in found[0]
    assert findings({"artifacts": [{**artifact, "latency": [steady]}]}) == []


# ------------------------------------------------------------------------------------------ no orphans
def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytestmark_linux
def test_close_leaves_no_process(model):
    runtime = open_runtime("browser-webgl", "tfjs_graph", model["dir"] / "tfjs_graph")
    runtime.load()
    profile = runtime._tmp
    pids = runtime.pids() + _processes_mentioning(profile)
    assert len(pids) >= 3  # the driver, Chromium and its helpers (their command lines name the profile folder)
    runtime.close()
    assert _wait_gone(pids) == [] and not Path(profile).exists()


@pytestmark_linux
def test_a_hung_page_is_killed_by_the_watchdog(model, monkeypatch):
    runtime = open_runtime("browser-cpu", "tfjs_graph", model["dir"] / "tfjs_graph")
    runtime.load()
    pids = runtime.pids() + _processes_mentioning(runtime._tmp)
    monkeypatch.setattr(tfjs, "CALL_TIMEOUT_S", 1.0)
    with pytest.raises(ConversionError, match="exited"):
        runtime.time([model["x"][:1]], {**SHORT, "min_runs": 1, "max_runs": 10**9, "min_seconds": 60})
    runtime.close()
    assert _wait_gone(pids) == []


_HOLDER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from converter.formats import open_runtime
    backend, folder = sys.argv[1], Path(sys.argv[2])
    with open_runtime(backend, "tfjs_graph", folder) as runtime:  # closed on the way out, as the toolkit's callers do
        print(runtime._proc.pid, getattr(runtime, "_tmp", None) or "", flush=True)
        x = __import__("numpy").zeros([1, 8, 8, 3], "float32")
        # busy for a minute: the child is in the middle of a call when its parent is killed
        runtime.time([x], {"warmup_runs": 0, "warmup_seconds": 0, "min_runs": 1, "min_seconds": 60,
                           "max_runs": 10**9, "max_seconds": 60})
""")


@pytestmark_linux
@pytest.mark.parametrize("how", ["kill -9 the parent", "Ctrl-C"])
@pytest.mark.parametrize("backend", ["tfjs-cpu", "browser-cpu"])
def test_no_child_outlives_its_parent(model, backend, how):
    """While the runner is busy: kill -9 of the Python process, or SIGINT to its process group as a terminal's
    Ctrl-C sends it. The Node runner / browser driver, Chromium and its helpers go too."""
    parent = subprocess.Popen([sys.executable, "-c", _HOLDER, backend, str(model["dir"] / "tfjs_graph")],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    try:
        driver, profile = (parent.stdout.readline().split() + [""])[:2]
        assert driver.isdigit(), "the holder did not start its runtime"
        pids = [int(driver)] + (_processes_mentioning(profile) if profile else [])
        time.sleep(1.0)  # inside the timing loop now
        assert all(_alive(p) for p in pids)
        if how == "Ctrl-C":
            os.killpg(parent.pid, signal.SIGINT)
        else:
            parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _wait_gone(pids, seconds=10.0) == []
        if profile:
            assert how != "Ctrl-C" or not Path(profile).exists()  # closed on the way out
    finally:
        parent.kill()
        parent.wait()


@pytest.fixture(scope="module")
def node_cpu(model):
    """The Node.js runner on the TF.js cpu backend per format: what the page's intermediate tensors are held against."""
    runtimes = {}
    for fmt in FORMATS_RUN:
        runtimes[fmt] = open_runtime("tfjs-cpu", fmt, model["dir"] / fmt)
        runtimes[fmt].load()
    yield runtimes
    for runtime in runtimes.values():
        runtime.close()


def test_the_page_reads_intermediate_tensors_and_reruns_one_node_as_the_node_runner_does(loaded, model, node_cpu):
    reference = node_cpu[loaded.fmt]
    tensors = loaded.tensors()
    assert [t.name for t in tensors] == [t.name for t in reference.tensors()]
    names = [t.name for t in tensors if t.op != "input"]
    x = model["x"]
    got, expected = loaded.intermediates([x], names), reference.intermediates([x], names)
    assert list(got) == names
    for name in names:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        assert got[name].shape == expected[name].shape and np.abs(got[name] - expected[name]).max() <= 1e-3 * scale, name
    # one node re-run alone in the page, fed the cpu backend's values of what it reads
    last = tensors[-1]
    fed = loaded.intermediates([expected[f] if f in expected else x for f in last.inputs], [last.name], feeds=list(last.inputs))
    assert np.abs(fed[last.name] - expected[last.name]).max() <= 1e-3 * max(1.0, float(np.abs(expected[last.name]).max()))


def test_a_model_with_more_shards_than_http_connections_loads(tmp_path):
    """Nine 4 MB weight shards (Chromium opens 6 HTTP/1.1 connections per host): tfjs's loader awaits every
    shard's headers before reading any body, which stalled the page until each response is read whole (page.js).
    (1 MB shards do not stall: their bodies fit in the browser's buffers.)"""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    net = k.Sequential([k.layers.Input((8,)), k.layers.Dense(1024, activation="relu"), k.layers.Dense(8192)])
    folder = tmp_path / "model"
    net.save(str(folder), save_format="tf")
    out = tmp_path / "graph"
    tfjs_export.export_graph(ModelRef(folder, "keras"), TfjsGraphExport(name="g", format="tfjs_graph"),
                             out, ExportContext(build_id="t"))
    (group,) = json.loads((out / "model.json").read_text())["weightsManifest"]
    assert len(group["paths"]) == 9
    x = np.random.RandomState(0).rand(2, 8).astype(np.float32)
    with open_runtime("browser-wasm", "tfjs_graph", out) as runtime:
        (found,) = runtime.run([x])
    assert np.abs(found - net.predict(x, verbose=0)).max() <= tolerance("tfjs_graph", "none").max_abs_diff * 10
