"""One latency measurement in a fresh process: `python -m converter.benchmark.worker SPEC.json`.

The spec (written by converter.benchmark.measure) names the artifact, format, backend, thread count,
the timing limits, the .npy file holding the fixed timed input and the JSON file to write the row
to. Only the runtime under test is imported, so the peak memory is that runtime's. Every failure is
written as {"error": "..."}; the exit code is 0 whenever a row (or an error row) was written.
"""
from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from converter.benchmark.schedule import Timing, run_timing
from converter.benchmark.stats import summarize

# The library each in-process backend imports, loaded before the model so load_ms does not include the import.
_LIBRARIES = {"tf": "converter.tf_env", "tflite": "ai_edge_litert.interpreter", "onnxruntime": "onnxruntime"}
# One timed inference inside Node, with no warm-up: TF.js's first-inference time.
_FIRST_ONLY = {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 1, "min_seconds": 0.0, "max_runs": 1, "max_seconds": 3600.0}


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its largest finished child), in MiB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale / (1024 * 1024)


def measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the artifact, time its first inference, then run the timing loop; return the latency row."""
    from converter.formats import open_runtime

    backend = spec["backend"]
    x = np.load(spec["input"])
    timing = Timing(**spec["timing"])
    in_node = backend.startswith(("tfjs-", "browser-"))  # [browser] timed inside the runtime: Node or the page
    runtime = open_runtime(backend, spec["fmt"], Path(spec["artifact_dir"]), spec["threads"])
    import_ms = import_library(backend)
    started = time.perf_counter()
    runtime.load()
    load_ms = (time.perf_counter() - started) * 1000.0
    try:
        description = runtime.describe()
        if in_node:  # timed inside Node: no inter-process traffic in the timings
            first_ms = runtime.time([x], _FIRST_ONLY)["latencies_ms"][0]
            timed = runtime.time([x], timing.as_dict())
            load_ms = runtime.info.get("load_ms", load_ms)
        else:
            started = time.perf_counter()
            runtime.run([x])
            first_ms = (time.perf_counter() - started) * 1000.0
            timed = run_timing(lambda: runtime.run([x]), timing)
    finally:
        runtime.close()  # for TF.js this waits for Node to exit, so RUSAGE_CHILDREN covers it
    return {
        **summarize(timed["latencies_ms"]),
        "warmup_runs": timed["warmup_runs"],
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "peak_rss_mb": peak_rss_mb(children=in_node),
        "peak_rss_of": "node" if in_node else "worker",
        "timed_in": "node" if in_node else "python",
        "runtime": description,
        "notes": thread_notes(backend, spec["threads"], description),
        **({"memory": timed["memory"]} if "memory" in timed else {}),  # [browser] tf.memory() after warm-up / timed runs
    }


def import_library(backend: str) -> float | None:
    """Import the backend's library (TensorFlow without initialising its threads); milliseconds taken, None for Node."""
    if backend not in _LIBRARIES:
        return None
    started = time.perf_counter()
    module = importlib.import_module(_LIBRARIES[backend])
    if backend == "tf":
        module.tf()
    return (time.perf_counter() - started) * 1000.0


def thread_notes(backend: str, threads: int, description: dict[str, Any]) -> list[str]:
    """Say where the thread count asked for is not the one in force."""
    settings = description.get("settings") or {}
    if backend == "tfjs-cpu":
        return ["the TF.js cpu backend is single-threaded JavaScript: the thread count does not apply"]
    if backend == "tfjs-wasm" and settings.get("threads", 1) < threads:
        why = ("this wasm build has no multithread support in Node (WASM_HAS_MULTITHREAD_SUPPORT false)"
               if not settings.get("multithread_supported") else "the wasm backend started fewer threads")
        return [f"{threads} threads asked, {settings.get('threads', 1)} in force: {why}"]
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m converter.benchmark.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        row = measure_here(spec)
    except Exception as error:  # any runtime failure becomes an error row
        row = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"}
        if type(error).__name__ == "BackendUnavailable":  # [browser] not offered here: skipped, never cached
            row["skipped"] = str(error)
    Path(spec["result"]).write_text(json.dumps(row, default=_plain))
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
