"""report.md, report.html and the side-by-side comparison, rendered from a stored report.json."""
from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from converter.errors import UserError
from converter.reporting.compare import compare_runs
from converter.reporting.html import pareto_front, render_html
from converter.reporting.markdown import render_markdown

SAMPLE_REPORT = Path(__file__).parent / "fixtures" / "report_sample.json"


def sample_report() -> dict:
    return json.loads(SAMPLE_REPORT.read_text())


def table_row(text: str, *first_cells: str) -> list[str]:
    """The cells of the Markdown table row starting with `first_cells`."""
    prefix = "| " + " | ".join(first_cells) + " |"
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return [cell.strip() for cell in line.strip("|").split(" | ")]


# ----------------------------------------------------------------------------- markdown
def test_markdown_summary_row_per_artifact_and_backend():
    text = render_markdown(sample_report())
    assert text.startswith("# tiny_conv\n\nReference: `source` (keras), top-1 90.00% on 200 samples")
    assert table_row(text, "tflite_int8", "tflite", "int8", "tflite") == [
        "tflite_int8", "tflite", "int8", "tflite", "8.0 KiB", "0.13×", "88.50%", "1.50", "98.00%",
        "0.056 / 0.0644 @2", "0.89×", "**FAIL**"]  # speed-up: float tflite's 0.05 ms / 0.056 ms at 2 threads
    assert table_row(text, "web", "tfjs_graph", "none", "tfjs-wasm")[-3:] == ["0.95 / 1.09 @2", "1.00×", "pass"]
    assert table_row(text, "web", "tfjs_graph", "none", "tfjs-cpu")[-3] == "1.9 / 2.19 @1"
    assert table_row(text, "onnx_dynamic", "onnx", "dynamic_int8", "–")[4:] == ["–"] * 7 + ["**FAIL**"]


def test_markdown_sections():
    text = render_markdown(sample_report())
    latency = table_row(text, "tflite_int8", "tflite", "1", "1")
    assert latency[4] == "0.048" and latency[-1] == "litert 2.3.0, XNNPACK on, 1 thread"
    assert "tfjs 4.22.0 wasm, SIMD on, 1 thread" in text
    failures = text.split("## Failures")[1].split("##")[0]
    assert "- tflite_int8 on tflite: top-1 drop 1.50 pts > budget 1.00 pts" in failures
    assert "- onnx_dynamic: tf2onnx failed: unsupported op FooBar" in failures
    findings = text.split("## Findings")[1].split("##")[0]
    assert findings.count("\n- ") == 2 and "TF.js wasm is only 2.00x as fast as tfjs-cpu" in findings
    assert "- web on tfjs-wasm: 2 threads asked, 1 in force" in text
    assert "AMD EPYC, 2 cores, 23.5 GB" in text
    assert text.rstrip().endswith("Overall: FAILED")


def test_markdown_uses_stored_findings_and_shows_latency_errors():
    report = sample_report()
    report["findings"] = ["a finding the engine stored"]
    report["artifacts"][0]["latency"].append({"backend": "tf", "threads": 4, "batch": 1, "error": "worker crashed"})
    text = render_markdown(report)
    assert "- a finding the engine stored" in text and "TF.js wasm is only" not in text
    assert "| reference | tf | 4 | 1 | error: worker crashed |" in text
    assert table_row(text, "reference", "savedmodel", "none", "tf")[9] == "0.55 / 0.632 @2"  # errors are not headline rows


# ----------------------------------------------------------------------------- html
def test_html_is_self_contained_with_two_plots():
    page = render_html(sample_report())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert "<td>tflite_int8</td>" in page and '<td class="fail">FAIL</td>' in page
    assert "<td>0.056 / 0.0644 @2</td>" in page
    assert "TF.js wasm is only 2.00x" in page


def test_html_escapes_text_and_skips_plots_without_data():
    report = sample_report()
    report["artifacts"] = report["artifacts"][-1:]  # only the failed export: nothing to plot
    report["artifacts"][0]["failures"] = ["onnx_dynamic: <script>alert(1)</script> & more"]
    page = render_html(report)
    assert "data:image/png" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page and "<script>" not in page


def test_pareto_front_keeps_points_nothing_beats():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (5.0, 1.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([(2.0, 2.0)]) == [0]


# ----------------------------------------------------------------------------- compare
@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    first, second = tmp_path / "run_a", tmp_path / "run_b"
    first.mkdir()
    shutil.copy(SAMPLE_REPORT, first / "report.json")
    report = sample_report()
    report["artifacts"] = [a for a in report["artifacts"] if a["name"] != "web"]
    int8 = next(a for a in report["artifacts"] if a["name"] == "tflite_int8")
    int8["evaluations"][0]["metrics"].update(top1=0.8975, top1_drop=0.0025)
    del int8["latency"][1]
    second.mkdir()
    (second / "report.json").write_text(json.dumps(report))
    return [first, second]


def test_compare_runs_side_by_side(two_runs):
    markdown, page = compare_runs(two_runs)
    header = next(line for line in markdown.splitlines() if line.startswith("| artifact"))
    assert "run_a top-1" in header and "run_b p50 / p90 ms" in header  # both runs are named tiny_conv: folders label them
    assert table_row(markdown, "tflite_int8", "tflite") == [
        "tflite_int8", "tflite", "88.50%", "1.50", "8.0 KiB", "0.056 / 0.0644 @2",
        "89.75%", "0.25", "8.0 KiB", "0.048 / 0.0552 @1"]
    assert table_row(markdown, "web", "tfjs-cpu")[6:] == ["–"] * 4
    assert '<th colspan="4">run_a</th>' in page and "<td>89.75%</td>" in page


def test_compare_runs_names_a_folder_without_report(two_runs, tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(UserError, match="not_a_run: no report.json"):
        compare_runs([two_runs[0], empty])
