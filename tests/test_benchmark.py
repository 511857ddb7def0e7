"""Latency harness: statistics, the timing schedule, one latency row per backend, machine facts, findings."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from converter.benchmark.findings import findings, float_sibling
from converter.benchmark.machine import fingerprint
from converter.benchmark.measure import batch_input, measure, plan
from converter.benchmark.schedule import Schedule, Timing, run_timing
from converter.benchmark.stats import summarize
from converter.errors import RecipeError
from converter.recipe.schema import BenchmarkSection

SAMPLE_REPORT = Path(__file__).parent / "fixtures" / "report_sample.json"


# ----------------------------------------------------------------------------- stats
def test_summarize_known_timings():
    stats = summarize([float(v) for v in range(1, 11)])
    assert stats["p50_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.1)
    assert stats["p99_ms"] == pytest.approx(9.91)
    assert stats["mean_ms"] == pytest.approx(5.5)
    assert stats["std_ms"] == pytest.approx(3.0276503540974917)  # sample standard deviation
    assert (stats["min_ms"], stats["max_ms"], stats["n"]) == (1.0, 10.0, 10)


def test_summarize_one_value_and_empty():
    assert summarize([2.5]) == {"p50_ms": 2.5, "p90_ms": 2.5, "p99_ms": 2.5, "mean_ms": 2.5, "std_ms": 0.0,
                                "min_ms": 2.5, "max_ms": 2.5, "n": 1}
    with pytest.raises(ValueError):
        summarize([])


# ----------------------------------------------------------------------------- the timing loop
class FakeClock:
    """A clock that only moves when the timed step runs: each step takes `step_seconds` (exact in binary)."""

    def __init__(self, step_seconds: float):
        self.now = 0.0
        self.step_seconds = step_seconds
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.calls += 1
        self.now += self.step_seconds


def timed(step_seconds: float, **limits) -> tuple[dict, FakeClock]:
    clock = FakeClock(step_seconds)
    values = {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 1, "min_seconds": 0.0, "max_runs": 1000, "max_seconds": 1000.0}
    return run_timing(clock.step, Timing(**{**values, **limits}), clock=clock), clock


def test_min_runs_reached_before_stopping():
    result, clock = timed(0.01, warmup_runs=3, min_runs=10, min_seconds=0.001)
    assert result["warmup_runs"] == 3
    assert len(result["latencies_ms"]) == 10
    assert result["latencies_ms"] == pytest.approx([10.0] * 10)
    assert clock.calls == 13


def test_min_seconds_reached_before_stopping():
    result, _ = timed(0.125, min_runs=2, min_seconds=1.0)
    assert len(result["latencies_ms"]) == 8


def test_max_runs_caps_a_long_min_seconds():
    result, _ = timed(0.125, min_runs=2, min_seconds=100.0, max_runs=7)
    assert len(result["latencies_ms"]) == 7


def test_max_seconds_caps_a_long_min_seconds():
    result, _ = timed(0.125, min_runs=2, min_seconds=100.0, max_seconds=0.5)
    assert len(result["latencies_ms"]) == 4


def test_never_stops_before_min_runs():
    result, _ = timed(0.125, min_runs=5, max_seconds=0.125)
    assert len(result["latencies_ms"]) == 5
    assert Timing(min_runs=50, max_runs=10).max_runs == 50


def test_warmup_lasts_its_seconds():
    result, _ = timed(0.125, warmup_runs=1, warmup_seconds=0.3)
    assert result["warmup_runs"] == 3


# ----------------------------------------------------------------------------- the schedule
def test_schedule_from_recipe_defaults_and_overrides():
    schedule = Schedule.from_recipe(BenchmarkSection(), {"min_runs": 10, "max_seconds": 2.0})
    assert schedule.threads == tuple(dict.fromkeys([1, os.cpu_count()]))
    assert schedule.timing == Timing(warmup_runs=10, warmup_seconds=1.0, min_runs=10, min_seconds=2.0, max_runs=100000, max_seconds=2.0)
    assert schedule.batch_sizes == (1,)
    custom = Schedule.from_recipe(BenchmarkSection(threads=[4, 1, 4], batch_sizes=[8, 1], backends=["tflite"]))
    assert (custom.threads, custom.batch_sizes, custom.backends) == ((4, 1), (8, 1), ("tflite",))


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown benchmark overrides: warmup"):
        Schedule.from_recipe(BenchmarkSection(), {"warmup": 3})
    with pytest.raises(RecipeError, match="benchmark.threads"):
        Schedule.from_recipe(BenchmarkSection(threads=[0, 2]))


def test_plan_times_single_threaded_backends_once_and_respects_backends():
    # TF.js cpu is single-threaded JavaScript, and TF.js wasm in Node.js has no thread support: a "4 threads" row
    # would time the same thing again
    schedule = Schedule(timing=Timing(), threads=(1, 4), batch_sizes=(1, 8))
    assert plan(["tfjs-cpu", "tfjs-wasm", "tflite"], schedule) == [
        ("tfjs-cpu", 1, 1), ("tfjs-cpu", 1, 8), ("tfjs-wasm", 1, 1), ("tfjs-wasm", 1, 8),
        ("tflite", 1, 1), ("tflite", 1, 8), ("tflite", 4, 1), ("tflite", 4, 8)]
    only = Schedule(timing=Timing(), threads=(2,), backends=("tflite",))
    assert plan(["tf", "tflite"], only) == [("tflite", 2, 1)]


def test_batch_input_takes_and_repeats_rows():
    sample = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert batch_input(sample, 2).tolist() == [[0, 1], [2, 3]]
    assert batch_input(sample, 5)[3:].tolist() == [[0, 1], [2, 3]]


# ----------------------------------------------------------------------------- one row per backend
TINY = Timing(warmup_runs=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0, max_runs=5, max_seconds=5.0)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """A tiny conv net as a Keras SavedModel, exported to tflite, onnx and tfjs_graph by the toolkit's exporters."""
    from converter import formats
    from converter.exports.base import ExportContext
    from converter.model_ref import ModelRef
    from converter.recipe.schema import OnnxExport, TfjsGraphExport, TFLiteExport
    from converter.tf_env import keras

    folder = tmp_path_factory.mktemp("bench")
    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((8, 8, 3))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = k.layers.GlobalAveragePooling2D()(x)
    k.Model(inputs, k.layers.Dense(10, activation="softmax")(x)).save(folder / "savedmodel", save_format="tf")
    ref = ModelRef(folder / "savedmodel", "keras")
    for spec in (TFLiteExport(name="t", format="tflite"), OnnxExport(name="o", format="onnx"),
                 TfjsGraphExport(name="g", format="tfjs_graph")):
        (folder / spec.format).mkdir()
        formats.exporter(spec.format)(ref, spec, folder / spec.format, ExportContext(build_id="t"))
    return folder


THREAD_SETTING = {"tf": "intra_op_threads", "tflite": "num_threads", "onnxruntime": "intra_op_num_threads",
                  "tfjs-cpu": "threads_requested", "tfjs-wasm": "threads_requested"}


@pytest.mark.parametrize("fmt,backend", [("savedmodel", "tf"), ("tflite", "tflite"), ("onnx", "onnxruntime"),
                                         ("tfjs_graph", "tfjs-cpu"), ("tfjs_graph", "tfjs-wasm")])
def test_every_backend_produces_a_latency_row(artifacts, fmt, backend):
    sample = np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)
    row = measure(artifacts / fmt, fmt, backend, threads=2, batch=2, schedule=TINY, sample=sample)
    assert "error" not in row, row.get("error")
    assert (row["backend"], row["threads"], row["batch"]) == (backend, 2, 2)
    assert 3 <= row["n"] <= 5
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["load_ms"] > 0 and row["first_inference_ms"] > 0
    assert row["peak_rss_mb"] > 10
    assert row["runtime"]["backend"] == backend
    assert row["runtime"]["settings"][THREAD_SETTING[backend]] == 2  # the thread count really passed to the runtime
    assert row["timed_in"] == ("node" if backend.startswith("tfjs") else "python")
    assert row["peak_rss_of"] == row["timed_in"].replace("python", "worker")
    if backend == "tfjs-wasm":
        assert "simd" in row["runtime"]["settings"]
        if not row["runtime"]["settings"].get("multithread_supported"):
            assert any("1 in force" in note for note in row["notes"])


def test_each_worker_reports_its_own_peak_memory(artifacts):
    """getrusage's ru_maxrss is inherited through fork and exec: a LiteRT worker started from this process (which
    holds TensorFlow, hundreds of MiB) used to report this process's peak. VmHWM is the worker's own."""
    from converter.benchmark.load import peak_rss_mb
    from converter.tf_env import tf

    tf().constant(1.0)  # this process holds TensorFlow
    sample = np.zeros((1, 8, 8, 3), np.float32)
    parent = peak_rss_mb()
    lite = measure(artifacts / "tflite", "tflite", "tflite", threads=1, batch=1, schedule=TINY, sample=sample)
    full = measure(artifacts / "savedmodel", "savedmodel", "tf", threads=1, batch=1, schedule=TINY, sample=sample)
    assert parent > 300 and full["peak_rss_mb"] > 300  # TensorFlow itself
    assert lite["peak_rss_mb"] < min(parent, full["peak_rss_mb"]) / 3


def test_a_broken_artifact_gives_an_error_row(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    row = measure(tmp_path, "onnx", "onnxruntime", threads=1, batch=1, schedule=TINY,
                  sample=np.zeros((1, 4), np.float32))
    assert (row["backend"], row["threads"], row["batch"]) == ("onnxruntime", 1, 1)
    assert "onnxruntime cannot load" in row["error"]
    assert "p50_ms" not in row


# ----------------------------------------------------------------------------- machine
def test_fingerprint_describes_this_machine():
    machine = fingerprint()
    assert machine["cores"] == os.cpu_count()
    assert machine["cpu_model"]
    assert set(machine["isa_flags"]) <= set(Path("/proc/cpuinfo").read_text().split())
    assert machine["memory_gb"] and machine["memory_gb"] > 0
    assert machine["versions"]["numpy"] == np.__version__
    json.dumps(machine)


# ----------------------------------------------------------------------------- findings
def sample_report() -> dict:
    return json.loads(SAMPLE_REPORT.read_text())


def test_findings_on_the_sample_report():
    found = findings(sample_report())
    assert len(found) == 2
    assert found[0].startswith("tflite_int8 (tflite int8) is slower than its float sibling tflite_float on tflite")
    assert "2 thread(s), batch 1: p50 0.056 ms vs 0.05 ms" in found[0]
    assert "1 thread(s)" not in found[0]  # int8 is faster at 1 thread
    assert found[1].startswith("web: TF.js wasm is only 2.00x as fast as tfjs-cpu at batch 1")


def test_no_findings_when_latencies_are_as_expected():
    report = sample_report()
    by_name = {a["name"]: a for a in report["artifacts"]}
    for row in by_name["tflite_int8"]["latency"]:
        row["p50_ms"] = 0.01
    by_name["web"]["latency"][1]["p50_ms"] = 0.5  # wasm 3.8x as fast as cpu
    assert findings(report) == []


def test_dynamic_range_slower_than_float_onnx_is_a_finding():
    report = sample_report()
    rows = [{"backend": "onnxruntime", "threads": 1, "batch": 1, "p50_ms": p50} for p50 in (0.1, 0.3)]
    onnx_float = {"name": "onnx_float", "format": "onnx", "quantization": "none", "latency": [rows[0]]}
    onnx_dynamic = {"name": "onnx_dyn", "format": "onnx", "quantization": "dynamic_int8", "latency": [rows[1]]}
    report["artifacts"] = [onnx_dynamic, onnx_float]
    assert float_sibling(onnx_dynamic, report["artifacts"]) is onnx_float
    (found,) = findings(report)
    assert "onnx_dyn (onnx dynamic_int8) is slower than its float sibling onnx_float on onnxruntime" in found
    onnx_static = copy.deepcopy(onnx_dynamic) | {"quantization": "int8"}
    report["artifacts"] = [onnx_static, onnx_float]
    assert findings(report) == []  # static int8 ONNX is not among the checked pairs
