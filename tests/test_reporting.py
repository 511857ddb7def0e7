"""report.md, report.html, their plots, the comparison of runs, JUnit XML and GitHub outputs, rendered from
stored report.json samples (tests/fixtures/make_report_samples.py writes them)."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import pytest

from converter.errors import UserError
from converter.reporting.cells import SUMMARY_HEADER
from converter.reporting.compare import comparison, compare_runs
from converter.reporting.github import annotations, escape_data, escape_property, job_summary
from converter.reporting.html import render_html
from converter.reporting.junit import render_junit
from converter.reporting.markdown import render_markdown
from converter.reporting.plot_data import drop_latency_points, drop_size_points
from converter.reporting.plots import drop_range, figure, pareto_front
from converter.reporting.rows import target_of
from converter.reporting.text import short_quantization

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_REPORT = FIXTURES / "report_sample.json"
FLAGSHIP_REPORT = FIXTURES / "report_flagship.json"
ROOT = Path(__file__).resolve().parents[1]


def sample_report() -> dict:
    return json.loads(SAMPLE_REPORT.read_text())


def flagship_report() -> dict:
    return json.loads(FLAGSHIP_REPORT.read_text())


def without_uncertainty(report: dict) -> dict:
    """The report as the engine wrote it before per-sample data and intervals."""
    report["reference"].pop("per_sample", None)
    report["reference"]["metrics"].pop("top1_ci", None)
    for artifact in report["artifacts"]:
        for evaluation in artifact["evaluations"]:
            evaluation.pop("per_sample", None)
            for key in ("top1_ci", "top1_drop_ci", "top1_agreement_ci", "mcnemar_p", "discordant"):
                evaluation["metrics"].pop(key, None)
    return report


def table_row(text: str, *first_cells: str, width: int = 0) -> list[str]:
    """The cells of the Markdown table row starting with `first_cells` (and having `width` cells, if given)."""
    prefix = "| " + " | ".join(first_cells) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in text.splitlines() if line.startswith(prefix)]
    (row,) = [r for r in rows if not width or len(r) == width]
    return row


def summary_row(text: str, artifact: str, backend: str) -> list[str]:
    """The summary table row of (artifact, backend): artifact | format | quantization | backend | verdict | ..."""
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith(f"| {artifact} |")]
    (row,) = [r for r in rows if len(r) == len(SUMMARY_HEADER) and r[3] == backend]
    return row


# ----------------------------------------------------------------------------- markdown
def test_markdown_opens_with_the_verdict_and_failures():
    text = render_markdown(sample_report())
    lines = text.splitlines()
    assert lines[0] == "# tiny_conv"
    assert lines[2] == "**FAILED: 2 of 5 artifacts failed (tflite_int8, onnx_dynamic); 1 of them only within noise (tflite_int8).**"
    failures = text.split("## Failures")[1].split("\n\n")[1]
    assert failures.splitlines() == [
        "- tflite_int8 on tflite: top-1 drop 1.50 pts > budget 1.00 pts — top-1 drop 95% CI [-0.79, 4.07] pts straddles "
        "the budget 1.00 pts: within noise; about 2,400 samples at the observed rates would decide it",
        "- onnx_dynamic: tf2onnx failed: unsupported op FooBar"]
    assert text.index("## Failures") < text.index("| artifact |")
    assert "Overall:" not in text


def test_markdown_summary_row_has_gzip_intervals_and_certainty():
    text = render_markdown(sample_report())
    assert summary_row(text, "tflite_int8", "tflite") == [
        "tflite_int8", "tflite", "int8", "tflite", "**FAIL** (within noise)", "8.0 KiB 0.13× ref", "7.2 KiB",
        "88.50% [83.3, 92.2]", "1.50 [-0.79, 4.07]", "98.00% [95.0, 99.2]", "0.056 / 0.0644 @2", "0.89×"]
    # speed-up: float tflite's 0.05 ms / 0.056 ms at 2 threads
    assert summary_row(text, "web", "tfjs-wasm")[-2:] == ["0.95 / 1.09 @2", "1.00×"]
    assert summary_row(text, "onnx_dynamic", "–")[1:] == ["onnx", "dynamic_int8", "–", "**FAIL**"] + ["–"] * 7


def test_markdown_without_per_sample_data_has_no_drop_interval():
    text = render_markdown(without_uncertainty(sample_report()))
    row = summary_row(text, "tflite_int8", "tflite")
    assert row[4] == "**FAIL**"               # no interval for the drop: no claim about its certainty
    assert row[8] == "1.50"
    assert row[7] == "88.50% [83.3, 92.2]"    # a proportion's interval needs only its value and the sample count
    assert "within noise" not in text.split("| artifact |")[1]


def test_markdown_shortens_long_quantization_with_a_footnote():
    text = render_markdown(flagship_report())
    mixed = "mixed(uint8:*,uint16:*/Conv1/*|*/expanded_conv_depthwise/*|*/predictions/*)"
    assert summary_row(text, "tfjs-mixed", "tfjs-cpu")[2] == "mixed uint8+uint16 [1]"
    assert f"- [1] `{mixed}`" in text
    assert short_quantization("int16x8") == "int16x8"


def test_markdown_sections_and_throughput():
    text = render_markdown(sample_report())
    latency = table_row(text, "tflite_int8", "tflite", "1", "1")
    assert latency[4] == "0.048" and latency[8] == "–" and latency[-1] == "litert 2.3.0, XNNPACK on, 1 thread"
    assert "tfjs 4.22.0 wasm, SIMD on, 1 thread" in text
    findings = text.split("## Findings")[1].split("##")[0]
    assert findings.count("\n- ") == 2 and "TF.js wasm is only 2.00x as fast as tfjs-cpu" in findings
    assert "- web on tfjs-wasm: 2 threads asked, 1 in force" in text
    assert "AMD EPYC, 2 cores, 23.5 GB" in text
    flagship = render_markdown(flagship_report())
    assert table_row(flagship, "tflite-int8", "tflite", "2", "8")[8] == "5,333 img/s"   # 8 images / 1.5 ms


def test_markdown_uses_stored_findings_and_shows_latency_errors():
    report = sample_report()
    report["findings"] = ["a finding the engine stored"]
    report["artifacts"][0]["latency"].append({"backend": "tf", "threads": 4, "batch": 1, "error": "worker crashed"})
    text = render_markdown(report)
    assert "- a finding the engine stored" in text and "TF.js wasm is only" not in text
    assert "| reference | tf | 4 | 1 | error: worker crashed |" in text
    assert summary_row(text, "reference", "tf")[10] == "0.55 / 0.632 @2"  # errors are not headline rows


def test_passing_report_headline():
    report = sample_report()
    report["artifacts"] = report["artifacts"][:2]
    report["passed"] = True
    text = render_markdown(report)
    assert "**PASSED: all 2 artifacts met their budgets on every backend.**" in text
    assert "2 passing verdict(s) of 2 artifact(s) are within noise" in text   # zero discordance on 200 samples


# ----------------------------------------------------------------------------- html
def test_html_is_self_contained_with_three_plots():
    page = render_html(flagship_report())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n") for image in images)


def test_html_verdict_first_no_backticks_and_hover_text():
    page = render_html(flagship_report())
    assert page.index("FAILED: 2 of 13 artifacts failed") < page.index("<table")
    assert "`" not in page and "<code>@N</code>" in page
    mixed = "mixed(uint8:*,uint16:*/Conv1/*|*/expanded_conv_depthwise/*|*/predictions/*)"
    assert f'<td title="{mixed}">mixed uint8+uint16 [1]</td>' in page
    assert f"<li><code>{mixed}</code></li>" in page
    assert '<td class="fail">FAIL<small>within noise</small></td>' in page
    assert '<td class="num">1.41 MiB</td>' in page  # gzip beside size


def test_html_summary_cells_stay_narrow():
    # What keeps the table inside 1400 px: no cell but a name is longer than 22 characters.
    page = render_html(flagship_report())
    summary = page.split("<table>")[1]
    for cell in re.findall(r"<td[^>]*>(.*?)</td>", summary):
        value = re.sub(r"<small>.*?</small>", "", cell)
        assert len(value) <= 22 or value.startswith("tflite-dynamic"), value


def test_html_escapes_text_and_skips_plots_without_data():
    report = sample_report()
    report["artifacts"] = report["artifacts"][-1:]  # only the failed export: nothing to plot
    report["artifacts"][0]["failures"] = ["onnx_dynamic: <script>alert(1)</script> & more"]
    page = render_html(report)
    assert "data:image/png" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page and "<script>" not in page


# ----------------------------------------------------------------------------- plots
def test_pareto_front_keeps_points_nothing_beats():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (5.0, 1.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([(2.0, 2.0)]) == [0]


def test_targets():
    assert [target_of(b) for b in ("tfjs-cpu", "tfjs-wasm", "browser-webgpu", "tflite", "onnxruntime", "tf")] == [
        "web", "web", "web", "mobile", "server", "server"]


def test_drop_points_worst_backend_per_target_with_interval_and_budget():
    points = {p.name: p for p in drop_size_points(flagship_report())}
    assert len(points) == 13
    collapsed = points["tfjs-uint8"]
    assert collapsed.target == "web" and collapsed.y == pytest.approx(52.646, abs=1e-3) and not collapsed.passed
    assert collapsed.budget == pytest.approx(3.0) and collapsed.x == pytest.approx(360_448 / 1024)
    assert points["tflite-pruned"].x == pytest.approx(905_216 / 1024)  # gzip, where pruning shows
    assert points["tfjs-mixed"].y_interval == pytest.approx((0.40, 4.43), abs=0.01)


def test_drop_axis_is_clipped_to_the_budgets_not_the_collapse():
    points = [p for p in drop_size_points(flagship_report()) if p.target == "web"]
    bottom, top = drop_range(points)
    assert 3.0 < top < 6.0 and -2.0 < bottom < 0   # 3-point budget shown; 52.6 points left outside
    assert any(p.y > top for p in points)


@pytest.mark.parametrize("points_of, drop", [(drop_latency_points, True), (drop_size_points, True)])
def test_plot_labels_do_not_overlap_and_clipped_points_say_their_value(points_of, drop):
    result = figure(points_of(flagship_report()), "x", "top-1 drop (points)", drop, "title")
    renderer = result.canvas.get_renderer()
    texts = []
    for axes in result.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in axes.texts]
        for (first, a), (second, b) in combinations(boxes, 2):
            assert not a.overlaps(b), f"{first!r} overlaps {second!r}"
        texts += [t for t, _ in boxes]
    assert "11 ↑52.6" in texts                                    # drawn at the edge with its value
    assert any(t.startswith("3 pts") for t in texts)              # the budget lines are labelled


# ----------------------------------------------------------------------------- compare
def make_runs(tmp_path: Path, *, same_samples: bool = True) -> tuple[Path, Path]:
    """(run folder, report.json file): the flagship, and the same with tflite-int8 losing 15 more samples."""
    base = flagship_report()
    if same_samples:
        base["reference"]["eval_data_id"] = "digits-test-359"
    first = tmp_path / "run_a"
    first.mkdir()
    (first / "report.json").write_text(json.dumps(base))
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_report_samples as samples
    finally:
        sys.path.remove(str(FIXTURES))
    new = json.loads(json.dumps(base))
    artifact = next(a for a in new["artifacts"] if a["name"] == "tflite-int8")
    correct, agree = samples.pair_vectors(20, 1, 1, seed=4)
    evaluation = samples.evaluation("tflite-int8", "tflite", samples.REF, correct, agree, artifact["evaluations"][0]["budget"])
    artifact["evaluations"] = [evaluation]
    artifact["failures"], artifact["passed"] = evaluation["reasons"], False
    del next(a for a in new["artifacts"] if a["name"] == "tfjs-layers")["evaluations"][1]   # tfjs-wasm no longer evaluated
    second = tmp_path / "run_b.json"
    second.write_text(json.dumps(new))
    return first, second


def test_compare_paired_deltas_regressions_and_fail_markers(tmp_path):
    first, second = make_runs(tmp_path)
    data = comparison([first, second])
    assert data["baseline"] == "run_a" and [r["label"] for r in data["runs"]] == ["run_a", "run_b"]
    row = next(r for r in data["rows"] if r["artifact"] == "tflite-int8")
    delta = row["runs"][1]["delta"]
    assert delta["method"] == "paired" and delta["top1_change"] == pytest.approx(-15 / 359)
    assert delta["top1_change_ci"][1] < 0 and delta["regression"] and delta["p"] < 0.001
    assert data["regressions"][0].startswith("tflite-int8 on tflite in run_b: top-1 -4.18 pts (95% CI")
    assert "tfjs-layers on tfjs-wasm in run_b: no longer evaluated" in data["regressions"][1]
    markdown, page = compare_runs([first, second])
    assert markdown.splitlines()[2] == "**2 significant regression(s) against run_a.**"
    assert table_row(markdown, "tfjs-uint8", "tfjs-cpu", "run_b")[3:5] == ["**FAIL**", "44.01% [39.0, 49.2]"]
    assert table_row(markdown, "tflite-int8", "tflite", "run_b")[5].startswith("**REGRESSION -4.18** [")
    assert table_row(markdown, "tflite-int8", "tflite", "run_b")[6] == "paired, p = 6.1e-05"
    assert '<td class="num fail">REGRESSION -4.18' in page


def test_compare_columns_do_not_grow_with_runs(tmp_path):
    first, second = make_runs(tmp_path)
    headers = []
    for runs in ([first, second], [first, second, first]):
        markdown, _ = compare_runs(runs)
        headers.append(next(line for line in markdown.splitlines() if line.startswith("| artifact")))
    assert headers[0] == headers[1]


def test_compare_unpaired_without_sample_identity_and_baseline_choice(tmp_path):
    first, second = make_runs(tmp_path, same_samples=False)
    data = comparison([first, second], baseline="run_b")
    assert data["baseline"] == "run_b"
    delta = next(r for r in data["rows"] if r["artifact"] == "tflite-int8")["runs"][0]["delta"]
    assert delta["method"] == "unpaired" and "reference.eval_data_id" in delta["unpaired_because"]
    assert delta["top1_change"] == pytest.approx(15 / 359, abs=1e-6) and not delta["regression"]
    assert comparison([first, second], baseline="2")["baseline"] == "run_b"
    with pytest.raises(UserError, match="--baseline nope"):
        comparison([first, second], baseline="nope")


def test_compare_names_a_folder_without_report(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(UserError, match="not_a_run: no report.json"):
        comparison([SAMPLE_REPORT, empty])
    with pytest.raises(UserError, match="missing.json: no such file"):
        comparison([tmp_path / "missing.json"])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"artifacts": [{"name": "x"}]}))
    with pytest.raises(UserError, match="broken.json: not a convert report"):
        comparison([broken])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converter", "compare", *args], cwd=ROOT, capture_output=True, text=True)


def test_compare_cli_exit_codes_and_json(tmp_path):
    first, second = make_runs(tmp_path)
    plain = run_cli(str(first), str(second))
    assert plain.returncode == 0 and plain.stdout.startswith("# Comparison of runs")
    gated = run_cli(str(first), str(second), "--fail-on-regression", "--json", "--out", str(tmp_path / "out"))
    assert gated.returncode == 1 and "REGRESSION tflite-int8 on tflite in run_b" in gated.stderr
    assert len(json.loads(gated.stdout)["regressions"]) == 2
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"compare.md", "compare.html", "compare.json"}
    same = run_cli(str(first), str(first / "report.json"), "--fail-on-regression")
    assert same.returncode == 0
    missing = run_cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


# ----------------------------------------------------------------------------- CI outputs
def test_junit_one_case_per_artifact_and_backend():
    root = ET.fromstring(render_junit(sample_report()))
    suite = root.find("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert sorted(cases) == sorted([("tiny_conv.reference", "tf"), ("tiny_conv.tflite_float", "tflite"),
                                    ("tiny_conv.tflite_int8", "tflite"), ("tiny_conv.web", "tfjs-cpu"),
                                    ("tiny_conv.web", "tfjs-wasm"), ("tiny_conv.onnx_dynamic", "export")])
    assert (suite.get("tests"), suite.get("failures"), root.get("failures")) == ("6", "2", "2")
    failure = cases[("tiny_conv.tflite_int8", "tflite")].find("failure")
    assert failure.get("message") == "tflite_int8 on tflite: top-1 drop 1.50 pts > budget 1.00 pts"
    assert "within noise; about 2,400 samples" in failure.text
    assert cases[("tiny_conv.onnx_dynamic", "export")].find("failure").get("type") == "conversion"
    assert cases[("tiny_conv.web", "tfjs-cpu")].find("failure") is None
    assert "drop (pts) 0.00 [-1.79, 1.79]" in cases[("tiny_conv.web", "tfjs-cpu")].find("system-out").text


def test_github_annotations_and_summary():
    lines = annotations(flagship_report())
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 4 and lines[-1].startswith("::notice title=convert mobilenet%3A verdicts within noise::")
    assert errors[2].startswith("::error title=convert mobilenet%3A tfjs-mixed on tfjs-cpu failed (within noise)::"
                                "tfjs-mixed on tfjs-cpu: top1_drop 0.02228 > budget max_top1_drop 0.02 — top-1 drop 95%25 CI")
    assert all("\n" not in line for line in lines)
    assert escape_data("a%b\r\nc") == "a%25b%0D%0Ac" and escape_property("a: b, c") == "a%3A b%2C c"
    summary = job_summary(flagship_report())
    assert summary.splitlines()[:3] == ["## ❌ convert: mobilenet", "",
                                        "**FAILED: 2 of 13 artifacts failed (tfjs-uint8, tfjs-mixed); 1 of them only "
                                        "within noise (tfjs-mixed).**"]
    assert table_row(summary, "tfjs-uint8", "tfjs-cpu") == ["tfjs-uint8", "tfjs-cpu", "**FAIL**", "352.0 KiB",
                                                           "44.01% [39.0, 49.2]", "52.65 [47.21, 57.72]", "14.4 / 16.1 @1"]


def test_ci_entry_points(tmp_path):
    summary_file = tmp_path / "summary.md"
    github = subprocess.run([sys.executable, "-m", "converter.reporting.github", str(SAMPLE_REPORT)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary_file)})
    assert github.returncode == 0 and github.stdout.startswith("::error title=convert tiny_conv%3A tflite_int8")
    assert summary_file.read_text().startswith("## ❌ convert: tiny_conv")
    junit = subprocess.run([sys.executable, "-m", "converter.reporting.junit", str(SAMPLE_REPORT), str(tmp_path / "j.xml")],
                           cwd=ROOT, capture_output=True, text=True)
    assert junit.returncode == 0 and ET.parse(tmp_path / "j.xml").getroot().get("tests") == "6"
    bad = subprocess.run([sys.executable, "-m", "converter.reporting.junit", str(tmp_path / "no.json"), "x.xml"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_fixtures_are_what_the_generator_writes(tmp_path):
    copy = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, copy, ignore=shutil.ignore_patterns("recipes", "__pycache__"))
    subprocess.run([sys.executable, str(copy / "make_report_samples.py")], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    for name in ("report_sample.json", "report_flagship.json"):
        assert json.loads((copy / name).read_text()) == json.loads((FIXTURES / name).read_text()), name


def test_search_plot_draws_every_trial_clips_a_collapse_and_marks_the_frontier_and_the_verdict():
    from converter.reporting.search_plot import figure

    trials = [{"size_ratio": 0.52, "top1_drop": -0.002, "verdict": "passed"},     # 1 anchor
              {"size_ratio": 0.25, "top1_drop": 0.42, "verdict": "failed"},       # 2 floor: collapsed, off the axis
              {"size_ratio": 0.36, "top1_drop": 0.004, "verdict": "within noise"},  # 3
              {"size_ratio": 0.40, "top1_drop": 0.001, "verdict": "passed"},      # 4 chosen
              {"size_ratio": 0.45, "top1_drop": 0.002, "verdict": "passed"},      # 5 beaten by 4 on both
              {"verdict": "error"}]                                               # 6 never built: not drawn
    artifact = {"name": "s", "evaluations": [{"metrics": {"top1_drop": 0.006}}],
                "details": {"search": {"trials": trials, "chosen_trial": 4, "backend": "tflite",
                                       "budget": {"max_top1_drop": 0.01}}}}
    axes = figure(artifact).axes[0]
    labels = sorted(t.get_text() for t in axes.texts if not t.get_text().startswith("budget"))
    assert labels == ["1", "2 (42)", "3", "4", "5"]
    low, high = axes.get_ylim()
    assert low < -0.2 and 1.0 < high < 42  # the budget in view, the collapse clipped to the edge
    (front,) = axes.lines[1:]  # the budget line, then the frontier: trials 3, 4, 1 (not 5; not 2, off the axis)
    assert list(front.get_xdata()) == [0.36, 0.40, 0.52] and list(front.get_ydata()) == [0.4, 0.1, -0.2]
    assert any(c.get_offsets().tolist() == [[0.40, 0.6]] for c in axes.collections)  # the held-out drop, at 4's size
