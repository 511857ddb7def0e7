"""Every recipe under recipes/ runs end to end, shortened through --set, so that none of them rots."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_cli

# recipe file -> overrides that shorten it (budgets may then fail: exit 1 is allowed, errors are not)
SHORTENED = {
    "mobilenet.yaml": ["pipeline.0.epochs=1", "pipeline.1.epochs=1", "pipeline.2.epochs=1", "data.train.limit=256",
                       "verify.limit=64", "exports.4.calibration_samples=32", "exports.8.calibration_samples=32",
                       # the suite's time: the browser once (tfjs-float32), Node.js for the other TF.js exports
                       *[f'exports.{i}.backends=["tfjs-cpu", "tfjs-wasm"]' for i in (10, 11, 12)]],
    "digits-h5.yaml": ["pipeline.0.epochs=1", "verify.limit=64"],
    "digits-savedmodel.yaml": ["verify.limit=64"],
}
COVERED_ELSEWHERE = {"mobilenet-imagenet.yaml": "tests/test_real_model.py",
                     "mobilenet-imagenet-search.yaml": "tests/test_search.py"}


def test_every_recipe_is_exercised():
    shipped = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert shipped == set(SHORTENED) | set(COVERED_ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SHORTENED))
def test_recipe_runs(recipe, tmp_path):
    # shortened training fails budgets on purpose: explaining each failure is tests/test_explain.py's job
    args = ["run", f"recipes/{recipe}", "--out", str(tmp_path / "run"), "--no-benchmark", "--no-explain"]
    for override in SHORTENED[recipe]:
        args += ["--set", override]
    result = run_cli(*args, cwd=ROOT)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(report["artifacts"]) == len([line for line in (ROOT / "recipes" / recipe).read_text().splitlines()
                                            if line.lstrip().startswith(("- {name:", "- name:"))])
    for artifact in report["artifacts"]:
        assert "error" not in artifact, artifact["error"]
        assert (tmp_path / "run" / artifact["path"]).is_dir()
        assert artifact["evaluations"], artifact["name"]
        for evaluation in artifact["evaluations"]:
            assert not any("does not load" in r or "fails to run" in r for r in evaluation["reasons"]), evaluation["reasons"]
            assert "top1" in evaluation["metrics"]
    for name in ("manifest.json", "report.md", "report.html"):
        assert (tmp_path / "run" / name).exists()
