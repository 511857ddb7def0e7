"""report.md: the verdict and the failures first, then one summary row per (artifact, backend), latency
details, findings and notes. Cells come from converter.reporting.cells, shared with report.html."""
from __future__ import annotations

from typing import Any, Sequence

from converter.reporting.cells import SUMMARY_HEADER, TABLE_NOTE, Cell, summary_table
from converter.reporting.explain import markdown_section as explain_section
from converter.reporting.rows import (
    LATENCY_HEADER, LATENCY_NOTE, latency_cells, latency_rows, machine_line, notes, reference_line, report_findings,
)
from converter.reporting.summary import failure_text, failures, headline, uncertain_summary


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; pipes inside cells are escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def markdown_cell(cell: Cell) -> str:
    text = f"**{cell.text}**" if cell.fail else cell.text
    if not cell.note:
        return text
    return f"{text} {cell.note}" if cell.note.startswith("[") or "×" in cell.note else f"{text} ({cell.note})"


def verdict_section(report: dict[str, Any]) -> list[str]:
    """The headline in bold, the failures and the uncertain passes: what a reader needs first."""
    lines = [f"**{headline(report)}**", ""]
    found = failures(report)
    if found:
        lines += ["## Failures", ""] + [f"- {failure_text(f)}" for f in found] + [""]
    uncertain = uncertain_summary(report)
    if uncertain:
        lines += [uncertain, ""]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report.md text of a report dict (the report.json contract)."""
    lines = [f"# {report.get('name', 'report')}", "", *verdict_section(report), reference_line(report), "",
             f"{LATENCY_NOTE} {TABLE_NOTE}", ""]
    summary = summary_table(report)
    lines += table(SUMMARY_HEADER, [[markdown_cell(c) for c in row] for row in summary.cells])
    if summary.footnotes:
        lines += [""] + [f"- [{i}] `{name}`" for i, name in enumerate(summary.footnotes, 1)]
    lines += explain_section(report)
    timed = latency_rows(report)
    if timed:
        lines += ["", "## Latency", ""] + table(LATENCY_HEADER, [latency_cells(a, r) for a, r in timed])
    from converter.reporting import search

    lines += search.markdown(report)
    for title, items in (("Findings", report_findings(report)), ("Notes", notes(report))):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in items]
    if report.get("machine"):
        lines += ["", "## Machine", "", machine_line(report["machine"])]
    return "\n".join(lines) + "\n"
