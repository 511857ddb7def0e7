"""compare.md and compare.html from converter.reporting.compare.comparison(): the regressions first, then one
table with a fixed set of columns (one row per artifact, backend and run, however many runs)."""
from __future__ import annotations

import html
from typing import Any

from converter.reporting.cells import Cell
from converter.reporting.html import bullet_list, cell_table, page
from converter.reporting.markdown import markdown_cell, table
from converter.reporting.text import MISSING, fmt, fmt_interval

HEADER = ("artifact", "backend", "run", "verdict", "top-1", "Δ top-1 (pts)", "test", "gzip", "Δ gzip", "p50 ms", "Δ p50")
NOTE = ("Δ columns: this run against the baseline. Δ top-1 is this run's top-1 minus the baseline's, in points, with "
        "its 95% interval: paired (Newcombe's interval, McNemar's exact test) when both runs carry per-sample "
        "correctness on the same samples, else unpaired (Newcombe's hybrid score interval, no test). REGRESSION: the "
        "whole interval lies below zero. Size and latency changes are ratios, not judged; latency only when both runs "
        "timed the same thread count.")


def _ratio(value: Any) -> str:
    return MISSING if value is None else f"{value:.2f}×"


def _cells(row: dict[str, Any], run: dict[str, Any], baseline: str) -> list[Cell]:
    head = [Cell(row["artifact"]), Cell(row["backend"]), Cell(run["run"] + (" (baseline)" if run["run"] == baseline else ""))]
    if not run["present"]:
        return head + [Cell("absent")] + [Cell(MISSING) for _ in HEADER[4:]]
    delta = run.get("delta") or {}
    verdict = Cell("pass" if run["passed"] else "FAIL", fail=not run["passed"],
                   note="within noise" if run.get("certainty") == "within noise" and not run["passed"] else "")
    if "top1_change" in delta:
        change = Cell(fmt(delta["top1_change"], "pts"), note=fmt_interval(delta.get("top1_change_ci"), "pts"))
    elif delta.get("regression"):
        change = Cell(delta.get("why", ""))
    else:
        change = Cell(MISSING if run["run"] != baseline else "")
    if delta.get("regression"):
        change = Cell("REGRESSION " + change.text, note=change.note, fail=True)
    test = MISSING
    if delta.get("method") == "paired":
        test = f"paired, p = {delta['p']:.2g}"
    elif delta.get("method") == "unpaired":
        test = "unpaired"
    return head + [
        verdict, Cell(fmt(run.get("top1"), "pct"), note=fmt_interval(run.get("top1_ci"), "pct")), change, Cell(test),
        Cell(fmt(run.get("gzip_bytes"), "bytes")), Cell(_ratio(delta.get("gzip_ratio")) if delta else ""),
        Cell(f"{fmt(run['p50_ms'], 'ms')} @{run['threads']}" if run.get("p50_ms") is not None else MISSING),
        Cell(_ratio(delta.get("p50_ratio")) if delta else ""),
    ]


def _table_cells(data: dict[str, Any]) -> list[list[Cell]]:
    return [_cells(row, run, data["baseline"]) for row in data["rows"] for run in row["runs"]]


def _about(data: dict[str, Any]) -> list[str]:
    lines = []
    for run in data["runs"]:
        what = (f"{run['cells']} cells" if "cells" in run else
                f"recipe {str(run.get('recipe_hash') or MISSING)[:12]}, {run.get('samples') or MISSING} samples")
        line = f"{run['label']}: {run['path']}, {what}, {'passed' if run.get('passed') else 'failed'}"
        lines.append(line + (f"; {run['machine']}" if run.get("machine") else ""))
    return lines


def _what(data: dict[str, Any]) -> str:
    return "sweeps, cell by cell" if data.get("kind") == "sweep" else "runs"


def headline(data: dict[str, Any]) -> str:
    count = len(data["regressions"])
    if count:
        return f"{count} significant regression(s) against {data['baseline']}."
    return f"No significant regression against {data['baseline']}."


def render_markdown(data: dict[str, Any]) -> str:
    lines = [f"# Comparison of {_what(data)}", "", f"**{headline(data)}**", ""]
    lines += [f"- {r}" for r in data["regressions"]] + ([""] if data["regressions"] else [])
    lines += [f"- {line}" for line in _about(data)] + ["", NOTE, ""]
    lines += table(HEADER, [[markdown_cell(c) for c in row] for row in _table_cells(data)])
    return "\n".join(lines) + "\n"


def render_html(data: dict[str, Any]) -> str:
    regressions = bullet_list(data["regressions"]) if data["regressions"] else ""
    box = (f'<div class="verdict {"failed" if data["regressions"] else "passed"}"><p><strong>'
           f'{html.escape(headline(data))}</strong></p>{regressions}</div>')
    body = [f"<h1>Comparison of {_what(data)}</h1>", box, bullet_list(_about(data)), f"<p>{html.escape(NOTE)}</p>",
            cell_table(HEADER, _table_cells(data))]
    return page(f"Comparison of {_what(data)}", "\n".join(body))
