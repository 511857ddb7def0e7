"""JUnit XML from a report dict, for CI test views: one test case per (artifact, backend), named
`<artifact>` / `<backend>`, failed with every reason and how sure the verdict is; an artifact that failed before
any backend ran it (conversion, load) is one test case named `export`.

    python -m converter.reporting.junit runs/mobilenet/report.json junit.xml
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

from converter.reporting.cells import SUMMARY_HEADER, summary_table
from converter.reporting.summary import failures

OUTPUT_COLUMNS = ("top-1", "drop (pts)", "agreement", "p50 / p90 ms")


def _case(suite: ET.Element, classname: str, name: str, reasons: list[str], kind: str, output: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if reasons:
        failure = ET.SubElement(case, "failure", message=reasons[0], type=kind)
        failure.text = "\n".join(reasons)
    if output:
        ET.SubElement(case, "system-out").text = output


def render_junit(report: dict[str, Any]) -> str:
    """The JUnit XML text of a report dict."""
    name = str(report.get("name", "report"))
    found = failures(report)
    by_case: dict[tuple[str, Optional[str]], list[str]] = {}
    for failure in found:
        lines = list(failure.reasons) + ([failure.detail] if failure.detail else [])
        by_case.setdefault((failure.artifact, failure.backend), []).extend(lines)
    suite = ET.Element("testsuite", name=f"convert: {name}", time=str((report.get("run") or {}).get("seconds", 0)))
    summary = summary_table(report)
    for row, cells in zip(summary.rows, summary.cells):
        artifact = row.artifact["name"]
        if row.evaluation is None and row.latency is None:
            continue  # nothing ran on a backend: the artifact-level case below reports it
        output = "; ".join(f"{column} {cells[SUMMARY_HEADER.index(column)].inline()}" for column in OUTPUT_COLUMNS)
        _case(suite, f"{name}.{artifact}", row.backend, by_case.pop((artifact, row.backend), []), "budget", output)
    for artifact in report.get("artifacts", []):
        reasons = by_case.pop((artifact["name"], None), [])
        ran = any(r.artifact is artifact and (r.evaluation or r.latency) for r in summary.rows)
        if reasons or not ran:
            _case(suite, f"{name}.{artifact['name']}", "export", reasons, "conversion", "")
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    root = ET.Element("testsuites", name="convert", tests=suite.get("tests"), failures=suite.get("failures"), errors="0")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def main(argv: list[str]) -> int:
    """python -m converter.reporting.junit REPORT_JSON OUT_XML"""
    from converter.errors import UserError
    from converter.reporting.compare import load_report

    if len(argv) != 2:
        print("usage: python -m converter.reporting.junit REPORT_JSON OUT_XML", file=sys.stderr)
        return 2
    try:
        report, _ = load_report(Path(argv[0]))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    Path(argv[1]).write_text(render_junit(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
