"""How much the toolkit adds on top of the raw tools.

(a) Conversion, cold: the toolkit's exporter (converter.exports.*) against the raw converter
    (TFLiteConverter, the tf2onnx command line, the tensorflowjs converter's Python API), each in a
    fresh Python process; the process wall time is compared (imports included, as a user pays them).
(b) Latency: the harness p50 (converter.benchmark.measure: a worker process, the runtime adapter's
    run()) against a bare timing loop in a fresh process (TFLite set_tensor once, then invoke +
    get_tensor; onnxruntime session.run), same threads, same input. The harness is started twice: from
    a lean process, and from a process that has just done what `convert run` does before timing
    (TensorFlow loaded and run, exports, checks on every backend, Node runners started and closed), so
    that anything the parent passes to the worker, or does while it runs, shows.

Usage:
    python benchmarks/compare_overhead.py                       # builds its own small conv net
    python benchmarks/compare_overhead.py --savedmodel PATH     # any single-input SavedModel
Prints a Markdown table; --json FILE also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

TOOLKIT_EXPORT = """
import sys, time
from pathlib import Path
from converter import formats
from converter.exports.base import ExportContext
from converter.model_ref import ModelRef
from converter.recipe.schema import {spec_class}
model = ModelRef(Path({model!r}), {kind!r})
formats.exporter({fmt!r})(model, {spec_class}(name="bench", format={fmt!r}), Path({out!r}), ExportContext(build_id="t"))
"""

RAW_EXPORT = {
    "tflite": """
import tensorflow as tf
from pathlib import Path
content = tf.lite.TFLiteConverter.from_saved_model({model!r}, signature_keys=["serving_default"]).convert()
Path({out!r}, "model.tflite").write_bytes(content)
""",
    "onnx": None,  # the tf2onnx command line: python -m tf2onnx.convert
    "tfjs_graph": """
from tensorflowjs.converters import tf_saved_model_conversion_v2 as converter
converter.convert_tf_saved_model({model!r}, {out!r}, signature_def="serving_default")
""",
}
SPEC_CLASSES = {"tflite": "TFLiteExport", "onnx": "OnnxExport", "tfjs_graph": "TfjsGraphExport"}

BARE_LOOP = {
    "tflite": """
import time, numpy as np
from ai_edge_litert.interpreter import Interpreter
x = np.load({input!r})
it = Interpreter(model_path={model!r}, num_threads={threads})
inp = it.get_input_details()[0]
it.resize_tensor_input(inp["index"], list(x.shape))
it.allocate_tensors()
out = it.get_output_details()[0]["index"]
it.set_tensor(inp["index"], x)
def step():
    it.invoke()
    return it.get_tensor(out)
""",
    "onnxruntime": """
import time, numpy as np
import onnxruntime as ort
x = np.load({input!r})
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
options.inter_op_num_threads = 1
session = ort.InferenceSession({model!r}, sess_options=options, providers=["CPUExecutionProvider"])
feed = {{session.get_inputs()[0].name: x}}
def step():
    return session.run(None, feed)
""",
}
LOOP = """
for _ in range({warmup}):
    step()
times = []
for _ in range({runs}):
    t0 = time.perf_counter()
    step()
    times.append((time.perf_counter() - t0) * 1000)
print("P50", float(np.percentile(times, 50)))
"""


def build_model(folder: Path) -> Path:
    """A small MobileNet-like conv net on 96x96x3 (about 30k parameters), saved as a Keras SavedModel."""
    code = f"""
from converter.tf_env import keras
k = keras()
k.utils.set_random_seed(0)
inputs = k.layers.Input((96, 96, 3))
x = k.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
for filters, stride in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
    x = k.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu")(x)
    x = k.layers.Conv2D(filters, 1, activation="relu")(x)
x = k.layers.GlobalAveragePooling2D()(x)
k.Model(inputs, k.layers.Dense(10, activation="softmax")(x)).save({str(folder)!r}, save_format="tf")
"""
    python(code)
    return folder


def python(code: str) -> tuple[float, str]:
    """Run Python code in a fresh process; return (wall seconds, stdout)."""
    return run([sys.executable, "-c", textwrap.dedent(code)])


def run(command: list[str]) -> tuple[float, str]:
    """Run a command in a fresh process; return (wall seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command[:4])}...\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def conversion_overhead(model: Path, kind: str, work: Path, repeats: int) -> list[dict[str, Any]]:
    """Median cold wall time of the toolkit exporter and of the raw tool, per format."""
    rows = []
    for fmt, spec_class in SPEC_CLASSES.items():
        toolkit, raw = [], []
        for attempt in range(repeats):
            out = work / f"{fmt}-toolkit-{attempt}"
            out.mkdir()
            toolkit.append(python(TOOLKIT_EXPORT.format(spec_class=spec_class, model=str(model), kind=kind, fmt=fmt, out=str(out)))[0])
            out = work / f"{fmt}-raw-{attempt}"
            out.mkdir()
            if RAW_EXPORT[fmt] is None:
                raw.append(run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(model), "--opset", "17",
                                "--output", str(out / "model.onnx")])[0])
            else:
                raw.append(python(RAW_EXPORT[fmt].format(model=str(model), out=str(out)))[0])
        rows.append({"format": fmt, "toolkit_s": statistics.median(toolkit), "raw_s": statistics.median(raw),
                     "ratio": statistics.median(toolkit) / statistics.median(raw)})
    return rows


IN_A_RUN = """
import json, sys
from pathlib import Path
from converter import api
from converter.benchmark.measure import measure
from converter.benchmark.schedule import Timing
import numpy as np
recipe = {{"name": "overhead", "model": {{"path": {model!r}}},
           "data": {{"eval": {{"source": "synthetic", "count": 32}}}},
           "exports": [{{"name": "t", "format": "tflite"}}, {{"name": "o", "format": "onnx"}},
                       {{"name": "g", "format": "tfjs_graph"}}],
           "benchmark": {{"enabled": False}}}}
api.run(recipe, out=Path({out!r}), cache_dir=Path({cache!r}))
timing = Timing(warmup_runs=50, warmup_seconds=0.0, min_runs={runs}, min_seconds=0.0, max_runs={runs}, max_seconds=600.0)
x = np.load({input!r})
rows = {{}}
for backend, fmt, folder in (("tflite", "tflite", {tflite!r}), ("onnxruntime", "onnx", {onnx!r})):
    rows[backend] = [measure(Path(folder), fmt, backend, {threads}, 1, timing, x)["p50_ms"] for _ in range({repeats})]
print("ROWS", json.dumps(rows))
"""


def harness_in_a_run(model: Path, work: Path, threads: int, runs: int, repeats: int) -> dict[str, list[float]]:
    """p50s of the harness started from a process that has just run a recipe, as `convert run` starts it."""
    code = IN_A_RUN.format(model=str(model), out=str(work / "run"), cache=str(work / "cache"), runs=runs,
                           input=str(work / "input.npy"), tflite=str(work / "tflite-toolkit-0"),
                           onnx=str(work / "onnx-toolkit-0"), threads=threads, repeats=repeats)
    return json.loads(python(code)[1].split("ROWS", 1)[1])


def harness_overhead(work: Path, threads: int, runs: int, repeats: int) -> list[dict[str, Any]]:
    """Median p50 of the harness and of a bare loop, alternating, per runtime."""
    from converter.benchmark.measure import measure
    from converter.benchmark.schedule import Timing

    artifacts = {"tflite": (work / "tflite-toolkit-0", "model.tflite"), "onnxruntime": (work / "onnx-toolkit-0", "model.onnx")}
    formats = {"tflite": "tflite", "onnxruntime": "onnx"}
    timing = Timing(warmup_runs=50, warmup_seconds=0.0, min_runs=runs, min_seconds=0.0, max_runs=runs, max_seconds=600.0)
    x = _input(artifacts["tflite"][0] / "model.tflite")
    np.save(work / "input.npy", x)
    rows = []
    for backend, (folder, filename) in artifacts.items():
        harness, bare = [], []
        for _ in range(repeats):
            row = measure(folder, formats[backend], backend, threads, 1, timing, x)
            if "error" in row:
                raise SystemExit(f"harness failed on {backend}: {row['error']}")
            harness.append(row["p50_ms"])
            code = BARE_LOOP[backend].format(input=str(work / "input.npy"), model=str(folder / filename), threads=threads)
            output = python(code + LOOP.format(warmup=50, runs=runs))[1]
            bare.append(float(output.split("P50")[-1]))
        rows.append({"runtime": backend, "threads": threads, "harness_p50_ms": statistics.median(harness),
                     "bare_p50_ms": statistics.median(bare), "ratio": statistics.median(harness) / statistics.median(bare)})
    return rows


def add_in_a_run(rows: list[dict[str, Any]], model: Path, work: Path, threads: int, runs: int, repeats: int) -> None:
    in_run = harness_in_a_run(model, work, threads, runs, repeats)
    for row in rows:
        row["in_run_p50_ms"] = statistics.median(in_run[row["runtime"]])
        row["in_run_ratio"] = row["in_run_p50_ms"] / row["bare_p50_ms"]


def _input(tflite_model: Path) -> np.ndarray:
    """A fixed random input of the model's input shape, batch 1."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(tflite_model)).get_input_details()[0]
    shape = [1 if d < 1 else int(d) for d in detail["shape_signature"]]
    shape[0] = 1
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def markdown(conversion: list[dict[str, Any]], latency: list[dict[str, Any]]) -> str:
    lines = ["| conversion (cold, fresh process) | toolkit s | raw tool s | toolkit / raw |", "|---|---|---|---|"]
    lines += [f"| {r['format']} | {r['toolkit_s']:.2f} | {r['raw_s']:.2f} | {r['ratio']:.3f} |" for r in conversion]
    lines += ["", "| latency (batch 1) | threads | bare loop p50 ms | harness p50 ms (lean parent) | / bare | "
              "harness p50 ms (parent after a run) | / bare |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['threads']} | {r['bare_p50_ms']:.4f} | {r['harness_p50_ms']:.4f} | {r['ratio']:.3f} | "
              f"{r.get('in_run_p50_ms', float('nan')):.4f} | {r.get('in_run_ratio', float('nan')):.3f} |" for r in latency]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--savedmodel", type=Path, help="a single-input SavedModel (default: build a small conv net)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side; the median is reported")
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per latency measurement")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads for the latency comparison")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convert-overhead-") as tmp:
        work = Path(tmp)
        model = args.savedmodel.resolve() if args.savedmodel else build_model(work / "model")
        kind = "keras" if (model / "keras_metadata.pb").is_file() else "savedmodel"
        conversion = conversion_overhead(model, kind, work, args.repeats)
        latency = harness_overhead(work, args.threads, args.runs, args.repeats)
        add_in_a_run(latency, model, work, args.threads, args.runs, args.repeats)
    print(markdown(conversion, latency))
    if args.json:
        args.json.write_text(json.dumps({"conversion": conversion, "latency": latency}, indent=2) + "\n")


if __name__ == "__main__":
    main()
