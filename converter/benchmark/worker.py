"""One latency measurement in a fresh process: `python -m converter.benchmark.worker SPEC.json`.

The spec (written by converter.benchmark.measure) names the artifact, format, backend, thread count,
the timing limits, the .npy file holding the fixed timed input and the JSON file to write the row
to. Only the runtime under test is imported; the peak memory is this process's own (or, for a runtime that
runs in a process of its own, that process's), never the parent's. Every failure is
written as {"error": "..."}; the exit code is 0 whenever a row (or an error row) was written.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from converter.data.dataset import feeds

from converter.errors import BackendUnavailable
from converter.benchmark.load import contention, noise_reasons, peak_rss_mb, sample
from converter.benchmark.schedule import Timing, run_timing
from converter.benchmark.stats import summarize

# One timed inference inside Node, with no warm-up: TF.js's first-inference time.
_FIRST_ONLY = {"warmup_runs": 0, "warmup_seconds": 0.0, "min_runs": 1, "min_seconds": 0.0, "max_runs": 1, "max_seconds": 3600.0}


def _inputs(path: str):
    """The timed input: one array (.npy), or {input name: array} (.npz) for a model with several inputs."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    return np.load(path)


def measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the artifact, time its first inference, then run the timing loop; return the latency row."""
    from converter.backends import BACKENDS, open_runtime

    backend = spec["backend"]
    x = _inputs(spec["input"])
    timing = Timing(**spec["timing"])
    timed_in = BACKENDS[backend].timed_in
    inside = timed_in != "python"
    runtime = open_runtime(backend, spec["fmt"], Path(spec["artifact_dir"]), spec["threads"])
    import_ms = import_library(backend)
    started = time.perf_counter()
    runtime.load()
    load_ms = (time.perf_counter() - started) * 1000.0
    try:
        description = runtime.describe()
        x = [x] if not isinstance(x, dict) else feeds(x, runtime.input_names)
        if inside:  # timed inside the runtime's own process: no inter-process traffic in the timings
            first_ms = runtime.time(x, _FIRST_ONLY)["latencies_ms"][0]
            before = sample()
            timed = runtime.time(x, timing.as_dict())
            after = sample()
            load_ms = runtime.info.get("load_ms", load_ms)
            peak, peak_of = timed.get("peak_rss_mb"), timed_in
        else:
            started = time.perf_counter()
            runtime.run(x)
            first_ms = (time.perf_counter() - started) * 1000.0
            before = sample()
            timed = run_timing(lambda: runtime.run(x), timing)
            after = sample()
            peak, peak_of = peak_rss_mb(), "worker"
    finally:
        runtime.close()
    row = {
        **summarize(timed["latencies_ms"]),
        "warmup_runs": timed["warmup_runs"],
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "peak_rss_mb": peak,
        "peak_rss_of": peak_of,
        "timed_in": timed_in,
        "runtime": description,
        "notes": thread_notes(backend, spec["threads"], description),
        **({"memory": timed["memory"]} if "memory" in timed else {}),  # [browser] tf.memory() after warm-up / timed runs
    }
    row["machine_load"] = contention(before, after)
    reasons = noise_reasons(row, row["machine_load"], spec["threads"])
    row["noisy"] = bool(reasons)
    if reasons:
        row["notes"].append("noisy: " + "; ".join(reasons) + ": kept out of findings and not cached")
    if spec["batch"] > 1:
        row["throughput_per_s"] = spec["batch"] * 1000.0 / row["p50_ms"]
    return row


def import_library(backend: str) -> float | None:
    """Import the backend's library (converter.backends: `library`), so load_ms does not include it; milliseconds
    taken, or None for a runtime in a process of its own."""
    from converter.backends import BACKENDS

    library = BACKENDS[backend].library
    if not library:
        return None
    started = time.perf_counter()
    module, _, call = library.partition(":")
    imported = importlib.import_module(module)
    if call:
        getattr(imported, call)()
    return (time.perf_counter() - started) * 1000.0


def thread_notes(backend: str, threads: int, description: dict[str, Any]) -> list[str]:
    """Say where the thread count asked for is not the one in force."""
    settings = description.get("settings") or {}
    if backend == "tfjs-cpu":
        return ["the TF.js cpu backend is single-threaded JavaScript: timed at 1 thread only"]
    if backend == "tfjs-wasm" and not settings.get("multithread_supported"):
        return [f"{threads} thread(s) asked, {settings.get('threads', 1)} in force: TF.js wasm in Node.js has no "
                "multithread support (WASM_HAS_MULTITHREAD_SUPPORT false), so it is timed at 1 thread only"]
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
        if isinstance(error, BackendUnavailable):  # not offered on this machine: skipped, never cached
            row["skipped"] = str(error)
    Path(spec["result"]).write_text(json.dumps(row, default=_plain))
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
