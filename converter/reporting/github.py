"""GitHub Actions outputs from a report dict: workflow-command annotations (`::error title=...::message`) for
failures, a notice for passing verdicts within noise, and a job summary (Markdown for $GITHUB_STEP_SUMMARY) that
opens with the verdict.

    python -m converter.reporting.github out/report.json
prints the annotations and appends the summary to $GITHUB_STEP_SUMMARY (or prints it when that is unset).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from converter.reporting.cells import SUMMARY_HEADER, summary_table
from converter.reporting.markdown import markdown_cell, table, verdict_section
from converter.reporting.summary import failure_text, failures, uncertain_summary

SUMMARY_COLUMNS = ("artifact", "backend", "verdict", "gzip", "top-1", "drop (pts)", "p50 / p90 ms")


def escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (title=...): also ':' and ','."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(report: dict[str, Any]) -> list[str]:
    """One ::error per failed evaluation (or failed export), one ::notice for the passes within noise."""
    name = report.get("name", "report")
    lines = []
    for failure in failures(report):
        where = f"{failure.artifact} on {failure.backend}" if failure.backend else failure.artifact
        title = f"convert {name}: {where} failed" + (" (within noise)" if failure.certainty == "within noise" else "")
        lines.append(f"::error title={escape_property(title)}::{escape_data(failure_text(failure))}")
    uncertain = uncertain_summary(report)
    if uncertain:
        lines.append(f"::notice title={escape_property(f'convert {name}: verdicts within noise')}::{escape_data(uncertain)}")
    return lines


def job_summary(report: dict[str, Any]) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: the verdict, the failures, then a compact table."""
    passed = report.get("passed", True) and all(a.get("passed", True) for a in report.get("artifacts", []))
    lines = [f"## {'✅' if passed else '❌'} convert: {report.get('name', 'report')}", "", *verdict_section(report)]
    summary = summary_table(report)
    keep = [SUMMARY_HEADER.index(c) for c in SUMMARY_COLUMNS]
    lines += table(SUMMARY_COLUMNS, [[markdown_cell(row[i]) for i in keep] for row in summary.cells])
    lines += ["", "Full report: `report.html` and `report.md` in the uploaded artifacts."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """python -m converter.reporting.github REPORT_JSON"""
    from converter.errors import UserError
    from converter.reporting.compare import load_report

    if len(argv) != 1:
        print("usage: python -m converter.reporting.github REPORT_JSON", file=sys.stderr)
        return 2
    try:
        report, _ = load_report(Path(argv[0]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in annotations(report):
        print(line)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(job_summary(report))
    else:
        print(job_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
