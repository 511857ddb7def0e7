"""report.json (the contract in docs/report-format.md), manifest.json, report.md and report.html."""
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
    """Assemble and judge the report, write report.json, manifest.json, report.md and report.html; return it."""
    reference_size = next((a.get("size_bytes") for a in artifacts if a["format"] == "savedmodel"), None)
    for artifact in artifacts:
        artifact["failures"] = [r for e in artifact["evaluations"] for r in e["reasons"]]
        if "error" in artifact:
            artifact["failures"].insert(0, artifact["error"])
        artifact["passed"] = not artifact["failures"]
        if reference_size and artifact.get("size_bytes"):
            artifact["size_ratio"] = artifact["size_bytes"] / reference_size
    from converter.benchmark.findings import findings
    from converter.reporting.html import render_html
    from converter.reporting.markdown import render_markdown

    report = {
        "name": engine.recipe.name,
        "recipe_hash": engine.loaded.hash(),
        "recipe": str(engine.loaded.path) if engine.loaded.path else None,
        "reference": reference,
        "stages": engine.stages(),
        "artifacts": artifacts,
        "passed": all(a["passed"] for a in artifacts),
        "warnings": engine.loaded.warnings,
        "run": {"seconds": round(seconds, 2), "cache_hits": engine.cache_hits, "computed": engine.computed},
        "versions": tool_versions(),
        "machine": engine.machine(),
    }
    report["findings"] = findings(report)
    write_json(engine.out_dir / "report.json", report)
    write_json(engine.out_dir / "manifest.json", manifest(report))
    write_text(engine.out_dir / "report.md", render_markdown(report))
    write_text(engine.out_dir / "report.html", render_html(report))
    return report


def manifest(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": report["name"], "recipe_hash": report["recipe_hash"], "versions": report["versions"],
        "artifacts": [{k: a[k] for k in MANIFEST_KEYS if k in a} | {"passed": a["passed"]} for a in report["artifacts"]],
    }


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
