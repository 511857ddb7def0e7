"""The summary table's cells: a value, a note (its interval, ratio or certainty) and a hover title, so that
report.md can write them inline and report.html can stack the note under the value in a narrow column."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.reporting.rows import SummaryRow, latency_cell, summary_rows
from converter.reporting.text import fmt, fmt_interval, short_quantization
from converter.reporting.uncertainty import evaluation_uncertainty

SUMMARY_HEADER = ("artifact", "format", "quantization", "backend", "verdict", "size", "gzip", "top-1", "drop (pts)",
                  "agreement", "p50 / p90 ms", "speed-up")
TABLE_NOTE = "Numbers in brackets are 95% intervals: Wilson for top-1 and agreement, Newcombe's paired interval for the drop."


@dataclass
class Cell:
    text: str
    note: str = ""     # shown under (HTML) or after (Markdown) the value
    title: str = ""    # full text on hover (HTML)
    fail: bool = False

    def inline(self) -> str:
        return f"{self.text} {self.note}" if self.note else self.text


@dataclass
class SummaryTable:
    rows: list[SummaryRow]
    cells: list[list[Cell]]
    footnotes: list[str]   # full quantization names, numbered from 1 in the order cells refer to them


def summary_table(report: dict[str, Any]) -> SummaryTable:
    rows = summary_rows(report)
    footnotes: list[str] = []
    cells = [summary_cells(report, row, footnotes) for row in rows]
    return SummaryTable(rows, cells, footnotes)


def quantization_cell(name: str, footnotes: list[str]) -> Cell:
    """A long quantization name shortened, with its full text on hover and as a numbered footnote."""
    short = short_quantization(name)
    if short == name:
        return Cell(name)
    if name not in footnotes:
        footnotes.append(name)
    return Cell(f"{short} [{footnotes.index(name) + 1}]", title=name)


def summary_cells(report: dict[str, Any], row: SummaryRow, footnotes: list[str]) -> list[Cell]:
    a, m = row.artifact, row.metrics
    uncertainty = evaluation_uncertainty(report, row.evaluation)
    certainty = uncertainty.certainty(row.passed)
    # a failure within noise says so here; passes within noise are named once, in the verdict at the top
    verdict = Cell("pass" if row.passed else "FAIL", note="within noise" if certainty == "within noise" and not row.passed
                   else "", fail=not row.passed)
    size_note = f"{fmt(row.size_ratio, 'x')} ref" if row.size_ratio is not None and a["format"] != "savedmodel" else ""
    return [
        Cell(a["name"]), Cell(a["format"]), quantization_cell(a.get("quantization", "none"), footnotes),
        Cell(row.backend), verdict,
        Cell(fmt(a.get("size_bytes"), "bytes"), note=size_note), Cell(fmt(a.get("gzip_bytes"), "bytes")),
        Cell(fmt(m.get("top1"), "pct"), note=fmt_interval(uncertainty.top1_ci, "pct")),
        Cell(fmt(m.get("top1_drop"), "pts"), note=fmt_interval(uncertainty.drop_ci, "pts")),
        Cell(fmt(m.get("top1_agreement"), "pct"), note=fmt_interval(uncertainty.agreement_ci, "pct")),
        Cell(latency_cell(row.latency)), Cell(fmt(row.speedup, "x")),
    ]
