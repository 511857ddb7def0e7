"""report.html: the summary table and latency details of report.md plus two plots, in one self-contained file.

Plots (matplotlib, Agg canvas, embedded as base64 PNG): top-1 drop against size and p50 latency
against size, one colour per format, one marker per backend, the Pareto front (smaller and lower
is better on both axes) drawn as a line through ringed points.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Optional

from converter.reporting.markdown import (
    LATENCY_HEADER, LATENCY_NOTE, SUMMARY_HEADER, failures, latency_cells, latency_rows, machine_line, notes,
    reference_line, report_findings, summary_cells, summary_rows,
)

FORMAT_COLOURS = {"savedmodel": "#4c4c4c", "tflite": "#1f77b4", "onnx": "#ff7f0e", "tfjs_graph": "#2ca02c",
                  "tfjs_layers": "#9467bd"}
BACKEND_MARKERS = {"tf": "s", "tflite": "o", "onnxruntime": "D", "tfjs-cpu": "^", "tfjs-wasm": "v"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; }
td.fail { color: #b00020; font-weight: bold; }
.plots img { max-width: 48%; margin-right: 1%; }
"""


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both are better smaller), by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(ox <= x and oy <= y and (ox < x or oy < y) for ox, oy in points)]
    return sorted(front, key=lambda i: points[i])


def render_html(report: dict[str, Any]) -> str:
    """The whole report.html text of a report dict: no external resources."""
    rows = summary_rows(report)
    title = html.escape(str(report.get("name", "report")))
    body = [f"<h1>{title}</h1>", f"<p>{_inline_code(reference_line(report))}</p>", f"<p>{html.escape(LATENCY_NOTE)}</p>",
            html_table(SUMMARY_HEADER, [summary_cells(r) for r in rows])]
    drop_points = [(r.artifact.get("size_bytes"), (r.metrics.get("top1_drop")), r) for r in rows]
    latency_points = [(r.artifact.get("size_bytes"), r.latency["p50_ms"] if r.latency else None, r) for r in rows]
    plots = [plot(_worst_per_artifact(drop_points), "top-1 drop (points)", 100.0),
             plot(latency_points, "p50 latency (ms)", 1.0)]
    images = [f'<img alt="{alt}" src="data:image/png;base64,{png}">' for alt, png in
              zip(("top-1 drop against size", "latency against size"), plots) if png]
    if images:
        body += ["<h2>Size, accuracy and latency</h2>", f'<div class="plots">{"".join(images)}</div>']
    timed = latency_rows(report)
    if timed:
        body += ["<h2>Latency</h2>", html_table(LATENCY_HEADER, [latency_cells(a, r) for a, r in timed])]
    for heading, items in (("Failures", failures(report)), ("Findings", report_findings(report)), ("Notes", notes(report))):
        if items:
            body += [f"<h2>{heading}</h2>", "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"]
    if report.get("machine"):
        body += ["<h2>Machine</h2>", f"<p>{html.escape(machine_line(report['machine']))}</p>"]
    body.append(f"<p><strong>Overall: {'PASSED' if report.get('passed') else 'FAILED'}</strong></p>")
    return page(title, "\n".join(body))


def page(title: str, body: str) -> str:
    """A complete HTML document with the report's inline style."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def html_table(header: Any, rows: list[list[str]], header_rows: Optional[list[str]] = None) -> str:
    """A table of escaped cells; a cell reading FAIL gets the 'fail' class. header_rows: extra raw <tr> above."""
    head = "".join(header_rows or []) + "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _td(cell: str) -> str:
    return f'<td class="fail">{html.escape(cell)}</td>' if cell == "FAIL" else f"<td>{html.escape(cell)}</td>"


def _inline_code(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _worst_per_artifact(points: list[tuple[Any, Any, Any]]) -> list[tuple[Any, Any, Any]]:
    """One point per artifact: its largest top-1 drop over the backends it was evaluated on."""
    worst: dict[str, tuple[Any, Any, Any]] = {}
    for x, y, row in points:
        name = row.artifact["name"]
        if y is not None and (name not in worst or y > worst[name][1]):
            worst[name] = (x, y, row)
    return list(worst.values())


def plot(points: list[tuple[Any, Any, Any]], ylabel: str, scale: float) -> Optional[str]:
    """A size-vs-metric scatter as base64 PNG, or None without two or more plottable points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    usable = [(x / 1024, y * scale, row) for x, y, row in points if x and y is not None]
    if len(usable) < 2:
        return None
    figure = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    seen: set[str] = set()
    for x, y, row in usable:
        fmt = row.artifact["format"]
        label = f"{fmt} / {row.backend}" if f"{fmt} / {row.backend}" not in seen else None
        seen.add(f"{fmt} / {row.backend}")
        axes.scatter(x, y, color=FORMAT_COLOURS.get(fmt, "#17becf"), marker=BACKEND_MARKERS.get(row.backend, "o"),
                     s=42, label=label, zorder=3)
        axes.annotate(row.artifact["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = pareto_front([(x, y) for x, y, _ in usable])
    axes.plot([usable[i][0] for i in front], [usable[i][1] for i in front], color="#d62728", linestyle="--",
              linewidth=1, zorder=2, drawstyle="steps-post", label="Pareto front")
    axes.scatter([usable[i][0] for i in front], [usable[i][1] for i in front], s=150, facecolors="none",
                 edgecolors="#d62728", linewidths=1.2, zorder=4)
    axes.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    values = [y for _, y, _ in usable]
    if min(values) > 0 and max(values) / min(values) > 20:
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(plain)
        ylabel += ", log scale"
    axes.set_xlabel("size (KiB, log scale)")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
