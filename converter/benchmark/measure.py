"""Time one artifact on one backend in its own process and return its latency row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from converter.benchmark.schedule import Schedule, Timing

def plan(backends: list[str], schedule: Schedule) -> list[tuple[str, int, int]]:
    """(backend, threads, batch) to measure for an artifact, in order; backends outside schedule.backends are left out."""
    from converter.backends import BACKENDS

    chosen = [b for b in backends if schedule.backends is None or b in schedule.backends]
    return [(backend, threads, batch)
            for backend in chosen
            for threads in ((1,) if BACKENDS[backend].single_threaded else schedule.threads)
            for batch in schedule.batch_sizes]


def batch_input(sample, batch: int):
    """The fixed timed input: the first `batch` rows of `sample` (which has a batch dimension), repeated if too few;
    for several inputs ({name: array}) the same rows of each."""
    if isinstance(sample, dict):
        return {name: batch_input(array, batch) for name, array in sample.items()}
    sample = np.asarray(sample)
    if sample.ndim == 0 or len(sample) == 0:
        raise ValueError("the benchmark sample needs a batch dimension and at least one row")
    reps = -(-batch // len(sample))
    return np.ascontiguousarray(np.concatenate([sample] * reps, axis=0)[:batch])


def measure(artifact_dir: Path, fmt: str, backend: str, threads: int, batch: int,
            schedule: Union[Schedule, Timing], sample: np.ndarray, timeout: Optional[float] = None) -> dict[str, Any]:
    """Latency row of one artifact on one backend, measured by `python -m converter.benchmark.worker`.

    The row: backend, threads, batch, p50/p90/p99/mean/std/min/max_ms, n, warmup_runs, import_ms
    (the runtime library; None for TF.js), load_ms (the model; inside Node for TF.js), first_inference_ms,
    peak_rss_mb (the own peak of the process running the model), timed_in, runtime (the adapter's describe()),
    machine_load and noisy (see converter.benchmark.load), throughput_per_s (batch > 1) and notes; or backend,
    threads, batch and `error` when it could not be timed.
    """
    timing = schedule.timing if isinstance(schedule, Schedule) else schedule
    head = {"backend": backend, "threads": threads, "batch": batch}
    if timeout is None:
        timeout = 600.0 + 2 * (timing.warmup_seconds + timing.max_seconds)
    with tempfile.TemporaryDirectory(prefix="convert-bench-") as tmp:
        folder = Path(tmp)
        timed_input = batch_input(sample, batch)
        if isinstance(timed_input, dict):
            np.savez(folder / "input.npz", **timed_input)
        else:
            np.save(folder / "input.npy", timed_input)
        spec = {"artifact_dir": str(Path(artifact_dir).resolve()), "fmt": fmt, "backend": backend,
                "threads": threads, "batch": batch, "timing": timing.as_dict(),
                "input": str(folder / ("input.npz" if isinstance(timed_input, dict) else "input.npy")), "result": str(folder / "row.json")}
        (folder / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        try:
            done = subprocess.run([sys.executable, "-m", "converter.benchmark.worker", str(folder / "spec.json")],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {**head, "error": f"timing on {backend} took longer than {timeout:.0f} s and was stopped"}
        result = folder / "row.json"
        if not result.is_file():
            tail = " | ".join(line for line in done.stderr.strip().splitlines()[-3:]) or "no output"
            return {**head, "error": f"the {backend} benchmark worker exited with code {done.returncode}: {tail[:500]}"}
        return {**head, **json.loads(result.read_text())}
