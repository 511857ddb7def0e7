"""Every recipe under recipes/ runs end to end, shortened through --set, so that none of them rots."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, run_cli

def shortened_flagship() -> list[str]:
    """The flagship in the suite's time: one epoch per stage on 256 images, 64 to verify, the browser for one TF.js
    export (Node.js for the others), and without its QAT stage and the export of it (77 s of the run's 255 s):
    QAT is tested on tiny models in tests/test_stages.py, its ONNX export in tests/test_onnx.py, and the whole
    flagship, QAT included, runs in `make demo`."""
    recipe = yaml.safe_load((ROOT / "recipes" / "mobilenet.yaml").read_text())
    pipeline = [{**stage, "epochs": 1} for stage in recipe["pipeline"] if stage["stage"] != "qat"]
    exports = []
    for export in recipe["exports"]:
        if export.get("model") == "qat":
            continue
        if "calibration_samples" in export:
            export = {**export, "calibration_samples": 32}
        if export["format"].startswith("tfjs") and export["name"] != "tfjs-float32":
            export = {**export, "backends": ["tfjs-cpu", "tfjs-wasm"]}
        exports.append(export)
    return ["data.train.limit=256", "verify.limit=64", f"pipeline={json.dumps(pipeline)}", f"exports={json.dumps(exports)}"]


# recipe file -> overrides that shorten it (budgets may then fail: exit 1 is allowed, errors are not)
SHORTENED = {
    "mobilenet.yaml": shortened_flagship(),
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
    exports = next((json.loads(o.split("=", 1)[1]) for o in SHORTENED[recipe] if o.startswith("exports=")),
                   yaml.safe_load((ROOT / "recipes" / recipe).read_text())["exports"])
    assert [a["name"] for a in report["artifacts"]] == [e["name"] for e in exports]
    for artifact in report["artifacts"]:
        assert "error" not in artifact, artifact["error"]
        assert (tmp_path / "run" / artifact["path"]).is_dir()
        assert artifact["evaluations"], artifact["name"]
        for evaluation in artifact["evaluations"]:
            assert not any("does not load" in r or "fails to run" in r for r in evaluation["reasons"]), evaluation["reasons"]
            assert "top1" in evaluation["metrics"]
    for name in ("manifest.json", "report.md", "report.html"):
        assert (tmp_path / "run" / name).exists()
