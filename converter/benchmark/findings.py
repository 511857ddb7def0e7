"""Plausibility findings on a finished report: latencies that go against what is usually expected.

They are remarks for a reader, not failures: a small model, a busy machine or a runtime's kernel
coverage can all explain them, and each finding says what to look at.
"""
from __future__ import annotations

from typing import Any, Optional

from converter.formats import family

# (format, quantization) expected to run faster than the float artifact of the same format
_HINTS = {
    ("tflite", "int8"): "full-integer kernels usually win; on a small model the quantize/dequantize at the edges, "
                        "or ops XNNPACK does not take in int8, can outweigh them",
    ("tflite", "dynamic_int8"): "dynamic-range quantization quantizes activations on every call, which often costs "
                                "more than the int8 weights save on small or convolution-heavy models",
    ("onnx", "dynamic_int8"): "onnxruntime's dynamic quantization quantizes activations on every call "
                              "(DynamicQuantizeLinear), and ConvInteger has no fast CPU kernel",
}
WASM_EXPECTED_SPEEDUP = 3.0


def float_sibling(artifact: dict[str, Any], artifacts: list[dict[str, Any]],
                  same_format: bool = False) -> Optional[dict[str, Any]]:
    """The float (quantization 'none') artifact of the same format family, preferring the same format, then the same model."""
    if artifact.get("quantization") == "none":
        return None
    candidates = [a for a in artifacts if a is not artifact and a.get("quantization") == "none" and "error" not in a
                  and (a["format"] == artifact["format"] if same_format else family(a["format"]) == family(artifact["format"]))]
    candidates.sort(key=lambda a: (a["format"] != artifact["format"], a.get("model") != artifact.get("model")))
    return candidates[0] if candidates else None


def timed_rows(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifact's latency rows that carry a trustworthy measurement: no error, not taken on a busy machine."""
    return [r for r in artifact.get("latency", [])
            if "error" not in r and r.get("p50_ms") is not None and not r.get("noisy")]


def matching_row(artifact: dict[str, Any], backend: str, threads: int, batch: int) -> Optional[dict[str, Any]]:
    return next((r for r in timed_rows(artifact)
                 if (r["backend"], r["threads"], r["batch"]) == (backend, threads, batch)), None)


def findings(report: dict[str, Any]) -> list[str]:
    """Every finding on the report's latency rows, as sentences."""
    artifacts = report.get("artifacts", [])
    found = []
    for artifact in artifacts:
        found += _slower_than_float(artifact, artifacts)
        if artifact["format"].startswith("tfjs"):
            found += _wasm_speedup(artifact)
        found += _tensor_leaks(artifact)
    return found


def _tensor_leaks(artifact: dict[str, Any]) -> list[str]:
    """Rows whose tf.memory() tensor count grew during the timed runs: something is not disposed per inference."""
    found = []
    for row in timed_rows(artifact):
        memory = row.get("memory") or {}
        before, after = memory.get("after_warmup") or {}, memory.get("after_timed") or {}
        if "numTensors" not in before or "numTensors" not in after or after["numTensors"] <= before["numTensors"]:
            continue
        grown = after["numTensors"] - before["numTensors"]
        found.append(f"{artifact['name']} on {row['backend']} ({row['threads']} thread(s), batch {row['batch']}) leaks tensors: "
                     f"tf.memory().numTensors grew from {before['numTensors']} after the warm-up to {after['numTensors']} "
                     f"after {row.get('n')} timed runs ({grown / max(row.get('n') or 1, 1):.3g} per run; numBytes "
                     f"{before.get('numBytes')} -> {after.get('numBytes')}): an inference leaves tensors undisposed, "
                     f"so a page running it keeps growing until it runs out of memory.")
    return found


def _slower_than_float(artifact: dict[str, Any], artifacts: list[dict[str, Any]]) -> list[str]:
    hint = _HINTS.get((artifact["format"], artifact.get("quantization")))
    sibling = float_sibling(artifact, artifacts, same_format=True) if hint else None
    if sibling is None:
        return []
    slower: dict[str, list[str]] = {}
    for row in timed_rows(artifact):
        other = matching_row(sibling, row["backend"], row["threads"], row["batch"])
        if other is not None and row["p50_ms"] > other["p50_ms"]:
            slower.setdefault(row["backend"], []).append(
                f"{row['threads']} thread(s), batch {row['batch']}: p50 {row['p50_ms']:.3g} ms vs {other['p50_ms']:.3g} ms")
    return [f"{artifact['name']} ({artifact['format']} {artifact['quantization']}) is slower than its float sibling "
            f"{sibling['name']} on {backend} ({'; '.join(cases)}): {hint}."
            for backend, cases in slower.items()]


def _wasm_speedup(artifact: dict[str, Any]) -> list[str]:
    rows = timed_rows(artifact)
    found = []
    for batch in sorted({r["batch"] for r in rows}):
        wasm = [r for r in rows if r["backend"] == "tfjs-wasm" and r["batch"] == batch]
        cpu = [r for r in rows if r["backend"] == "tfjs-cpu" and r["batch"] == batch]
        if not wasm or not cpu:
            continue
        best_wasm = min(wasm, key=lambda r: r["p50_ms"])
        best_cpu = min(cpu, key=lambda r: r["p50_ms"])
        speedup = best_cpu["p50_ms"] / best_wasm["p50_ms"]
        if speedup >= WASM_EXPECTED_SPEEDUP:
            continue
        simd = ((best_wasm.get("runtime") or {}).get("settings") or {}).get("simd")
        why = ("SIMD is off in this wasm build" if simd is False else
               "per-op overhead dominates small models, where the wasm backend's advantage shrinks")
        found.append(f"{artifact['name']}: TF.js wasm is only {speedup:.2f}x as fast as tfjs-cpu at batch {batch} "
                     f"(p50 {best_wasm['p50_ms']:.3g} ms vs {best_cpu['p50_ms']:.3g} ms; "
                     f"{WASM_EXPECTED_SPEEDUP:g}x or more is usual): {why}.")
    return found
