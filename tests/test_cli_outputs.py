"""What `convert run` writes besides artifacts: intervals and the within-noise policy, JUnit XML, GitHub outputs,
the console and convert.log."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from conftest import digits_data, run_cli
from converter import api


def recipe_for(models_dir, **verify) -> dict:
    return {"name": "noise", "model": {"path": str(models_dir / "tiny_conv.h5")},
            "data": {"eval": digits_data("test", 40)},
            "exports": [{"name": "lite", "format": "tflite"}],
            "verify": {"max_top1_drop": 0.01, "min_top1_agreement": None, **verify}, "benchmark": {"enabled": False}}


def test_a_drop_whose_interval_straddles_the_budget_is_settled_by_the_policy(models_dir, tmp_path):
    # a float TFLite artifact makes exactly the reference's decisions: drop 0, but on 40 samples its 95 % interval
    # reaches well past one point, so a 1-point budget cannot be confirmed
    point = api.run(recipe_for(models_dir), out=tmp_path / "point")
    metrics = point.artifact("lite")["evaluations"][0]["metrics"]
    assert metrics["top1_drop"] == 0 and metrics["discordant"] == [0, 0] and metrics["mcnemar_p"] == 1.0
    low, high = metrics["top1_drop_ci"]
    assert low < 0 < 0.01 < high
    reference = point.data["reference"]
    assert reference["per_sample"]["n"] == 40 and len(reference["metrics"]["top1_ci"]) == 2
    assert reference["eval_data_id"]
    assert point.passed  # 'point': the measured value decides
    strict = api.run(recipe_for(models_dir, within_noise="fail"), out=tmp_path / "strict")
    assert not strict.passed
    assert "within noise, verify.within_noise: fail" in strict.artifact("lite")["failures"][0]
    assert api.run(recipe_for(models_dir, within_noise="pass"), out=tmp_path / "lenient").passed


def test_junit_xml_github_annotations_and_console(models_dir, tmp_path, write_recipe):
    recipe = write_recipe(recipe_for(models_dir, within_noise="fail"))
    summary = tmp_path / "step-summary.md"
    result = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--junit-xml", str(tmp_path / "junit.xml"),
                     env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 1, result.stderr[-2000:]
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    failed = [case for case in cases if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == ["tflite"]
    stdout = result.stdout.strip().splitlines()
    assert stdout[0].startswith("::error title=convert noise%3A lite on tflite failed")
    assert json.loads(stdout[-1])["passed"] is False  # the JSON summary stays the last line
    assert "convert: noise" in summary.read_text()
    # the console: no TensorFlow or converter noise, a verdict line per check, the summary table
    assert "FAIL lite on tflite" in result.stderr and "noise: FAILED" in result.stderr
    assert "cuDNN" not in result.stderr and "XNNPACK" not in result.stderr
    log = (tmp_path / "run" / "convert.log").read_text()
    assert "XNNPACK" in log or "absl" in log or "cuda" in log.lower()
