"""Several runs side by side: one row per (artifact, backend), top-1 / drop / size / p50 per run.

For comparing recipes or models: `compare_runs([runs/a, runs/b])` reads each run's report.json.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from converter.errors import UserError
from converter.reporting.html import html_table, page
from converter.reporting.markdown import MISSING, fmt, latency_cell, machine_line, summary_rows, table

COLUMNS = ("top-1", "drop (pts)", "size", "p50 / p90 ms")


def load_report(run_dir: Path) -> dict[str, Any]:
    """A run folder's report.json; UserError naming the folder when it has none or it is unreadable."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no report.json (not a finished `convert run` output folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable report: {error}") from None


def run_labels(run_dirs: list[Path], reports: list[dict[str, Any]]) -> list[str]:
    """Each run's name, or its folder where names repeat, or its position where folders' names repeat too."""
    names = [str(r.get("name", MISSING)) for r in reports]
    if len(set(names)) == len(names):
        return names
    folders = [Path(d).name for d in run_dirs]
    if len(set(folders)) == len(folders):
        return folders
    return [f"run {i + 1}: {d}" for i, d in enumerate(run_dirs)]


def comparison(run_dirs: list[Path]) -> tuple[list[str], list[list[str]], list[str]]:
    """(run labels, one row of cells per (artifact, backend), one line per run describing it)."""
    if not run_dirs:
        raise UserError("compare: name at least one run folder")
    reports = [load_report(Path(d)) for d in run_dirs]
    labels = run_labels(run_dirs, reports)
    cells: dict[tuple[str, str], dict[int, list[str]]] = {}
    for index, report in enumerate(reports):
        for row in summary_rows(report):
            cells.setdefault((row.artifact["name"], row.backend), {})[index] = [
                fmt(row.metrics.get("top1"), "pct"), fmt(row.metrics.get("top1_drop"), "pts"),
                fmt(row.artifact.get("size_bytes"), "bytes"), latency_cell(row.latency)]
    rows = [[name, backend, *[c for i in range(len(reports)) for c in by_run.get(i, [MISSING] * len(COLUMNS))]]
            for (name, backend), by_run in cells.items()]
    about = [f"{label}: {d}, recipe {str(r.get('recipe_hash', MISSING))[:12]}, "
             f"{'passed' if r.get('passed') else 'failed'}" + (f"; {machine_line(r['machine'])}" if r.get("machine") else "")
             for label, d, r in zip(labels, run_dirs, reports)]
    return labels, rows, about


def compare_runs(run_dirs: list[Path]) -> tuple[str, str]:
    """(Markdown, HTML) of the runs' report.json side by side; '–' where a run lacks an artifact, backend or value."""
    labels, rows, about = comparison(run_dirs)
    header = ["artifact", "backend"] + [f"{label} {column}" for label in labels for column in COLUMNS]
    markdown = "\n".join(["# Comparison of runs", "", *[f"- {line}" for line in about], "", *table(header, rows), ""])
    groups = ('<tr><th colspan="2"></th>' + "".join(f'<th colspan="{len(COLUMNS)}">{html.escape(label)}</th>' for label in labels)
              + "</tr>")
    body = ["<h1>Comparison of runs</h1>", "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in about) + "</ul>",
            html_table(["artifact", "backend", *COLUMNS * len(labels)], rows, header_rows=[groups])]
    return markdown, page("Comparison of runs", "\n".join(body))
