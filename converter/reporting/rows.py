"""What the reports say, row by row, built once from the report dict and shared by report.md, report.html,
the comparison of runs and the CI outputs, so all of them say the same thing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from converter.benchmark.findings import float_sibling, matching_row, timed_rows
from converter.benchmark.findings import findings as latency_findings
from converter.reporting.text import MISSING, fmt, fmt_rate, throughput
from converter.stats import wilson

TARGETS = ("web", "mobile", "server")


def target_of(backend: str) -> str:
    """The deployment target a backend stands for: web (TF.js in Node or a browser), mobile (LiteRT), server."""
    if backend.startswith(("tfjs", "browser")):
        return "web"
    if backend == "tflite":
        return "mobile"
    if backend in ("onnxruntime", "tf"):
        return "server"
    return "other"


@dataclass
class SummaryRow:
    """What the summary table says about one artifact on one backend."""

    artifact: dict[str, Any]
    backend: str
    evaluation: Optional[dict[str, Any]]
    metrics: dict[str, Any]
    latency: Optional[dict[str, Any]]  # the headline latency row, if one was timed
    speedup: Optional[float]
    size_ratio: Optional[float]
    passed: bool

    @property
    def target(self) -> str:
        return target_of(self.backend)


def headline_row(artifact: dict[str, Any], backend: str) -> Optional[dict[str, Any]]:
    """The latency row a summary shows: smallest batch (1 when timed), then the most threads."""
    rows = [r for r in timed_rows(artifact) if r["backend"] == backend]
    if not rows:
        return None
    batch = min(r["batch"] for r in rows)
    return max((r for r in rows if r["batch"] == batch), key=lambda r: r["threads"])


def reference_size(report: dict[str, Any]) -> Optional[int]:
    return next((a.get("size_bytes") for a in report.get("artifacts", []) if a["format"] == "savedmodel"), None)


def summary_rows(report: dict[str, Any]) -> list[SummaryRow]:
    """One row per (artifact, backend) the artifact was evaluated or timed on; one row for an artifact with neither."""
    artifacts = report.get("artifacts", [])
    ref_size = reference_size(report)
    rows = []
    for artifact in artifacts:
        evaluations = {e["backend"]: e for e in artifact.get("evaluations", [])}
        backends = list(dict.fromkeys([*evaluations, *(r["backend"] for r in artifact.get("latency", []))]))
        size_ratio = artifact.get("size_ratio")
        if size_ratio is None and ref_size and artifact.get("size_bytes"):
            size_ratio = artifact["size_bytes"] / ref_size
        sibling = float_sibling(artifact, artifacts)
        for backend in backends or [MISSING]:
            evaluation = evaluations.get(backend)
            latency = headline_row(artifact, backend)
            rows.append(SummaryRow(
                artifact=artifact, backend=backend, evaluation=evaluation,
                metrics=(evaluation or {}).get("metrics") or {}, latency=latency,
                speedup=_speedup(artifact, sibling, latency), size_ratio=size_ratio,
                passed=evaluation["passed"] if evaluation else artifact.get("passed", "error" not in artifact)))
    return rows


def _speedup(artifact: dict[str, Any], sibling: Optional[dict[str, Any]], latency: Optional[dict[str, Any]]) -> Optional[float]:
    if latency is None:
        return None
    if artifact.get("quantization") == "none":
        return 1.0
    if sibling is None:
        return None
    base = matching_row(sibling, latency["backend"], latency["threads"], latency["batch"])
    return base["p50_ms"] / latency["p50_ms"] if base and latency["p50_ms"] > 0 else None


def latency_cell(row: Optional[dict[str, Any]]) -> str:
    """'p50 / p90 @threads', plus the throughput when the row was timed at batch > 1."""
    if row is None:
        return MISSING
    text = f"{fmt(row['p50_ms'], 'ms')} / {fmt(row.get('p90_ms'), 'ms')} @{row['threads']}"
    rate = throughput(row)
    return text + (f", batch {row['batch']}: {fmt_rate(rate)}" if rate else "")


# ----------------------------------------------------------------------------- latency details
LATENCY_HEADER = ("artifact", "backend", "threads", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "throughput",
                  "runs", "load ms", "first run ms", "peak RSS MiB", "runtime path")
LATENCY_NOTE = ("Latency: p50 / p90 in ms at batch 1 (or the smallest batch timed) with the most threads timed, "
                "written `@N` for N threads; rows timed at batch > 1 also give images per second (batch / p50). "
                "Speed-up is against the float artifact of the same format family on the same backend, threads and "
                "batch; size ratio is against the SavedModel reference; gzip is the download size.")


def runtime_path(row: dict[str, Any]) -> str:
    """The execution path a latency row really took, in a few words."""
    runtime = row.get("runtime") or {}
    settings = runtime.get("settings") or {}
    name = f"{runtime.get('runtime', row['backend'])} {runtime.get('version') or ''}".strip()
    if "xnnpack" in settings:
        return f"{name}, XNNPACK {'on' if settings['xnnpack'] else 'off'}, {_threads(settings.get('num_threads'))}"
    if "providers" in settings:
        return f"{name}, {'+'.join(settings['providers'])}, intra-op {settings.get('intra_op_num_threads')}"
    if "intra_op_threads" in settings:
        return f"{name}, intra-op {settings['intra_op_threads']}, inter-op {settings.get('inter_op_threads')}"
    if "simd" in settings:
        simd = ", SIMD " + ("on" if settings["simd"] else "off") if settings.get("backend") == "wasm" else ""
        return f"{name} {settings.get('backend')}{simd}, {_threads(settings.get('threads', 1))}"
    return name


def _threads(count: Any) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def latency_rows(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(artifact, row) for every latency row, errors included."""
    return [(a, r) for a in report.get("artifacts", []) for r in a.get("latency", [])]


def latency_cells(artifact: dict[str, Any], row: dict[str, Any]) -> list[str]:
    head = [artifact["name"], row["backend"], str(row.get("threads", MISSING)), str(row.get("batch", MISSING))]
    if "error" in row:
        return head + [f"error: {row['error']}"] + [""] * (len(LATENCY_HEADER) - len(head) - 1)
    return head + [fmt(row["p50_ms"], "ms"), fmt(row.get("p90_ms"), "ms"), fmt(row.get("p99_ms"), "ms"),
                   f"{fmt(row.get('mean_ms'), 'ms')} ± {fmt(row.get('std_ms'), 'ms')}",
                   fmt_rate(throughput(row)) if throughput(row) else MISSING, fmt(row.get("n")),
                   fmt(row.get("load_ms"), "ms"), fmt(row.get("first_inference_ms"), "ms"),
                   fmt(round(row["peak_rss_mb"], 1) if row.get("peak_rss_mb") is not None else None), runtime_path(row)]


# ----------------------------------------------------------------------------- sections
def report_findings(report: dict[str, Any]) -> list[str]:
    """The report's own findings when it stores them, else computed from its latency rows."""
    return report["findings"] if "findings" in report else latency_findings(report)


def notes(report: dict[str, Any]) -> list[str]:
    """Recipe warnings, exporter notes and latency notes, each once."""
    items = list(report.get("warnings", []))
    for artifact in report.get("artifacts", []):
        items += [f"{artifact['name']}: {n}" for n in artifact.get("notes", [])]
        items += [f"{artifact['name']} on {r['backend']}: {n}" for r in artifact.get("latency", []) for n in r.get("notes", [])]
    for stage in report.get("stages", []):
        items += [f"stage {stage['name']}: {n}" for n in stage.get("notes", [])]
    return list(dict.fromkeys(items))


def reference_line(report: dict[str, Any]) -> str:
    ref = report.get("reference") or {}
    line = f"Reference: `{ref.get('model', MISSING)}` ({ref.get('format', MISSING)})"
    metrics = ref.get("metrics") or {}
    if metrics.get("top1") is not None:
        line += f", top-1 {fmt(metrics['top1'], 'pct')}"
        interval = metrics.get("top1_ci")
        if interval is None and ref.get("samples"):
            interval = wilson(round(metrics["top1"] * ref["samples"]), ref["samples"])
        if interval:
            line += f" (95% CI {100 * interval[0]:.1f}–{100 * interval[1]:.1f}%)"
        line += f" on {ref.get('samples', MISSING)} samples"
    return line


def machine_line(machine: dict[str, Any]) -> str:
    flags = ", ".join(machine.get("isa_flags") or []) or "none listed"
    return (f"{machine.get('cpu_model', MISSING)}, {machine.get('cores', MISSING)} cores, "
            f"{machine.get('memory_gb', MISSING)} GB, {machine.get('os', MISSING)}; ISA: {flags}")
