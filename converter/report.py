"""report.json (the contract in docs/report-format.md), manifest.json and report.md."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.versions import tool_versions

if TYPE_CHECKING:
    from converter.engine import Engine

MANIFEST_KEYS = ("name", "format", "quantization", "path", "files", "size_bytes", "gzip_bytes", "sha256", "parents", "id")


def build_report(engine: "Engine", reference: dict[str, Any], artifacts: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Assemble, verdict and write report.json, manifest.json and report.md; return the report."""
    reference_size = next((a.get("size_bytes") for a in artifacts if a["format"] == "savedmodel"), None)
    for artifact in artifacts:
        artifact["failures"] = [r for e in artifact["evaluations"] for r in e["reasons"]]
        if "error" in artifact:
            artifact["failures"].insert(0, artifact["error"])
        artifact["passed"] = not artifact["failures"]
        if reference_size and artifact.get("size_bytes"):
            artifact["size_ratio"] = artifact["size_bytes"] / reference_size
    report = {
        "name": engine.recipe.name,
        "recipe_hash": engine.loaded.hash(),
        "recipe": str(engine.loaded.path) if engine.loaded.path else None,
        "reference": reference,
        "artifacts": artifacts,
        "passed": all(a["passed"] for a in artifacts),
        "warnings": engine.loaded.warnings,
        "run": {"seconds": round(seconds, 2), "cache_hits": engine.cache_hits, "computed": engine.computed},
        "versions": tool_versions(),
    }
    write_json(engine.out_dir / "report.json", report)
    write_json(engine.out_dir / "manifest.json", manifest(report))
    write_text(engine.out_dir / "report.md", markdown(report))
    return report


def manifest(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": report["name"], "recipe_hash": report["recipe_hash"], "versions": report["versions"],
        "artifacts": [{k: a[k] for k in MANIFEST_KEYS if k in a} | {"passed": a["passed"]} for a in report["artifacts"]],
    }


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "pts":
        return f"{100 * value:+.2f}".replace("-0.00", "+0.00")
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB" if value < 1024 * 1024 else f"{value / 1024 / 1024:.2f} MiB"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [f"# {report['name']}", "",
             f"Reference: `{ref['model']}` ({ref['format']})" + (f", top-1 {_fmt(ref['metrics'].get('top1'), 'pct')} on {ref.get('samples')} samples" if ref["metrics"].get("top1") is not None else ""),
             "", "| artifact | format | quantization | backend | size | gzip | ratio | top-1 | drop (pts) | agreement | max abs diff | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in report["artifacts"]:
        rows = a["evaluations"] or [{"backend": "–", "metrics": {}, "passed": a["passed"]}]
        for e in rows:
            m = e["metrics"]
            lines.append("| " + " | ".join([
                a["name"], a["format"], a["quantization"], e["backend"], _fmt(a.get("size_bytes"), "bytes"),
                _fmt(a.get("gzip_bytes"), "bytes"), _fmt(a.get("size_ratio")), _fmt(m.get("top1"), "pct"),
                _fmt(0.0 - m["top1_drop"] if "top1_drop" in m else None, "pts"), _fmt(m.get("top1_agreement"), "pct"),
                _fmt(m.get("max_abs_diff")), "pass" if e["passed"] else "**FAIL**",
            ]) + " |")
    failed = [a for a in report["artifacts"] if not a["passed"]]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {reason}" for a in failed for reason in a["failures"]]
    notes = [(a["name"], n) for a in report["artifacts"] for n in a.get("notes", [])]
    if notes or report["warnings"]:
        lines += ["", "## Notes", ""] + [f"- {w}" for w in report["warnings"]] + [f"- {name}: {n}" for name, n in notes]
    lines += ["", f"Overall: {'PASSED' if report['passed'] else 'FAILED'}", ""]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
