"""The compact table `convert run` prints at the end: one row per artifact, its worst backend first."""
from __future__ import annotations

from typing import Any

from rich.table import Table


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _pts(value: Any) -> str:
    """A top-1 drop in points (positive: accuracy lost)."""
    return "–" if value is None else f"{100 * value:.2f}".replace("-0.00", "0.00")


def _size(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value / 1024:.0f} KiB" if value < 1024 * 1024 else f"{value / 1024 / 1024:.2f} MiB"


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['name']}: {'PASSED' if report['passed'] else 'FAILED'}", title_justify="left",
                  box=None, pad_edge=False, header_style="bold")
    for column, justify in (("artifact", "left"), ("backends", "left"), ("top-1", "right"), ("drop (pts)", "right"),
                            ("size", "right"), ("gzip", "right"), ("verdict", "left")):
        table.add_column(column, justify=justify, no_wrap=column == "backends")
    for artifact in report["artifacts"]:
        evaluations = [e for e in artifact.get("evaluations", []) if e.get("status") != "skipped"]
        worst = max(evaluations, key=lambda e: (e["metrics"].get("top1_drop") or 0.0), default=None)
        metrics = worst["metrics"] if worst else {}
        verdict = "[green]pass[/green]" if artifact["passed"] else "[red]FAIL[/red]"
        skipped = [e["backend"] for e in artifact.get("evaluations", []) if e.get("status") == "skipped"]
        backends = ",".join(e["backend"] for e in evaluations) + (f" (skipped {', '.join(skipped)})" if skipped else "")
        table.add_row(artifact["name"], backends or "–", _pct(metrics.get("top1")), _pts(metrics.get("top1_drop")),
                      _size(artifact.get("size_bytes")), _size(artifact.get("gzip_bytes")), verdict)
    return table
