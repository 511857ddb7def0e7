"""report.html: the verdict and failures first, the summary table (fits 1400 px: long quantization maps
shortened, full text on hover and in a footnote, intervals under their values), three plots with one panel
per deployment target, then latency details, findings and notes. One self-contained file, no scripts."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

from converter.reporting.cells import SUMMARY_HEADER, TABLE_NOTE, Cell, summary_table
from converter.reporting.explain import html_section as explain_section
from converter.reporting.plot_data import artifact_numbers, drop_latency_points, drop_size_points, latency_size_points
from converter.reporting.rows import (
    LATENCY_HEADER, LATENCY_NOTE, latency_cells, latency_rows, machine_line, notes, reference_line, report_findings,
)
from converter.reporting.summary import failure_text, failures, headline, uncertain_summary

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1360px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.45em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; font-weight: 600; }
td.num, td.name { white-space: nowrap; }
td.num { text-align: right; }
td small { display: block; color: #666; font-size: 11px; white-space: nowrap; }
td.fail { color: #b00020; font-weight: bold; }
.verdict { padding: 0.6em 1em; border-radius: 4px; margin: 0.5em 0 1em; }
.verdict.passed { background: #e8f5e9; border: 1px solid #81c784; }
.verdict.failed { background: #fdecea; border: 1px solid #e57373; }
.verdict p { margin: 0.2em 0; font-size: 1.1em; }
.verdict ul { margin: 0.3em 0; padding-left: 1.4em; }
.plots img { display: block; max-width: 100%; margin: 0.5em 0; }
.key { font-size: 12px; color: #444; }
.key span { margin-right: 1em; white-space: nowrap; }
.key .fail { color: #b00020; }
.footnotes { font-size: 12px; color: #444; }
pre { background: #f6f6f6; padding: 0.5em 0.8em; font-size: 12px; overflow-x: auto; }
"""
NAMES = {"artifact", "backend"}
NUMERIC = {"size", "gzip", "top-1", "drop (pts)", "agreement", "p50 / p90 ms", "speed-up", "Δ top-1 (pts)", "Δ gzip",
           "p50 ms", "Δ p50", "threads", "batch", "p90 ms", "p99 ms", "mean ± std ms", "throughput", "runs", "load ms",
           "first run ms", "peak RSS MiB"}


def render_html(report: dict[str, Any]) -> str:
    """The whole report.html text of a report dict: no external resources."""
    title = html.escape(str(report.get("name", "report")))
    body = [f"<h1>{title}</h1>", verdict_box(report), f"<p>{inline_code(reference_line(report))}</p>",
            f"<p>{inline_code(LATENCY_NOTE)} {html.escape(TABLE_NOTE)}</p>"]
    summary = summary_table(report)
    body.append(cell_table(SUMMARY_HEADER, summary.cells))
    if summary.footnotes:
        body.append('<ol class="footnotes">' + "".join(f"<li><code>{html.escape(n)}</code></li>" for n in summary.footnotes)
                    + "</ol>")
    body += plots_section(report)
    body += explain_section(report)
    timed = latency_rows(report)
    if timed:
        body += ["<h2>Latency</h2>", html_table(LATENCY_HEADER, [latency_cells(a, r) for a, r in timed])]
    from converter.reporting import search

    body += search.html(report)
    for heading, items in (("Findings", report_findings(report)), ("Notes", notes(report))):
        if items:
            body += [f"<h2>{heading}</h2>", bullet_list(items)]
    if report.get("machine"):
        body += ["<h2>Machine</h2>", f"<p>{html.escape(machine_line(report['machine']))}</p>"]
    return page(title, "\n".join(body))


def verdict_box(report: dict[str, Any]) -> str:
    passed = report.get("passed", True) and all(a.get("passed", True) for a in report.get("artifacts", []))
    parts = [f'<div class="verdict {"passed" if passed else "failed"}"><p><strong>{html.escape(headline(report))}</strong></p>']
    found = [failure_text(f) for f in failures(report)]
    if found:
        parts.append(bullet_list(found))
    uncertain = uncertain_summary(report)
    if uncertain:
        parts.append(f"<p>{html.escape(uncertain)}</p>")
    return "".join(parts) + "</div>"


def plots_section(report: dict[str, Any]) -> list[str]:
    from converter.reporting.plots import plot

    figures = [
        ("top-1 drop against download size", plot(drop_size_points(report), "download size (gzip, KiB)",
                                                  "top-1 drop (points)", True, "Top-1 drop against download size")),
        ("top-1 drop against latency", plot(drop_latency_points(report), "p50 latency (ms)", "top-1 drop (points)", True,
                                            "Top-1 drop against latency")),
        ("latency against download size", plot(latency_size_points(report), "download size (gzip, KiB)",
                                               "p50 latency (ms)", False, "Latency against download size")),
    ]
    images = [f'<img alt="{alt}" src="data:image/png;base64,{png}">' for alt, png in figures if png]
    if not images:
        return []
    failed = {a["name"] for a in report.get("artifacts", []) if not a.get("passed", True)}
    key = "".join(f'<span{" class=fail" if name in failed else ""}><strong>{number}</strong> {html.escape(name)}</span>'
                  for name, number in artifact_numbers(report).items())
    return ["<h2>Accuracy, size and latency</h2>",
            "<p>Error bars: 95% intervals of the drop. Sizes are gzip sizes (what a user downloads). "
            "Each panel is one deployment target; its Pareto front joins the passing artifacts nothing beats on both axes.</p>",
            f'<div class="plots">{"".join(images)}</div>', f'<p class="key">{key}</p>']


def page(title: str, body: str) -> str:
    """A complete HTML document with the report's inline style."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def bullet_list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _cell_td(cell: Cell, column: str) -> str:
    kind = "num" if column in NUMERIC else "name" if column in NAMES else ""
    classes = " ".join(c for c in (kind, "fail" if cell.fail else "") if c)
    attributes = (f' class="{classes}"' if classes else "") + (f' title="{html.escape(cell.title)}"' if cell.title else "")
    note = f"<small>{html.escape(cell.note)}</small>" if cell.note else ""
    return f"<td{attributes}>{html.escape(cell.text)}{note}</td>"


def cell_table(header: Sequence[str], rows: Sequence[Sequence[Cell]], header_rows: Optional[list[str]] = None) -> str:
    """A table of Cells: numeric columns right-aligned, notes stacked under values, titles on hover."""
    head = "".join(header_rows or []) + "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(_cell_td(c, h) for c, h in zip(row, header)) + "</tr>" for row in rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], header_rows: Optional[list[str]] = None) -> str:
    """A table of plain escaped cells; a cell reading FAIL gets the 'fail' class. header_rows: extra raw <tr> above."""
    return cell_table(header, [[Cell(str(c), fail=c == "FAIL") for c in row] for row in rows], header_rows)


def inline_code(text: str) -> str:
    """Escape, and turn `backtick` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
