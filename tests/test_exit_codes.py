"""Exit codes: 0 passed, 1 a budget failed, 2 a user error, 3 a bug; a missing runtime is a row, not an abort."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, digits_data, run_cli


def test_an_internal_error_exits_3_with_its_traceback_and_says_it_is_a_bug(tmp_path, write_recipe, models_dir):
    recipe = write_recipe({"name": "bug", "model": {"path": str(models_dir / "tiny_dense.h5")},
                           "exports": [{"name": "sm", "format": "savedmodel"}], "benchmark": {"enabled": False}})
    code = ("import sys\nimport converter.assemble as a\n"
            "def broken(*args, **kwargs):\n    raise KeyError('a bug')\n"
            "a.assemble = broken\nfrom converter.cli import main\n"
            f"sys.argv = ['convert', 'run', {str(recipe)!r}, '--out', {str(tmp_path / 'run')!r}]\nmain()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr
    assert "this is a bug in convert" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "run" / "manifest.json").exists()


def _without_node(tmp_path) -> dict:
    empty = tmp_path / "no-node-here"
    empty.mkdir()
    return {"PATH": str(empty)}


def test_without_nodejs_the_tfjs_backends_are_skipped_and_the_run_goes_on(tmp_path, write_recipe, models_dir):
    recipe = write_recipe({"name": "nonode", "model": {"path": str(models_dir / "tiny_conv.h5")},
                           "data": {"eval": digits_data("test", 16)},
                           "exports": [{"name": "sm", "format": "savedmodel"}, {"name": "web", "format": "tfjs_graph"}],
                           "benchmark": {"enabled": False}})
    result = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), env=_without_node(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    web = next(a for a in report["artifacts"] if a["name"] == "web")
    assert [(e["backend"], e["status"]) for e in web["evaluations"]] == [
        ("tfjs-cpu", "skipped"), ("tfjs-wasm", "skipped"), ("browser-webgl", "skipped"), ("browser-wasm", "skipped")]
    assert all("install" in e["skipped"] for e in web["evaluations"])
    assert all("Node.js" in e["skipped"] for e in web["evaluations"][:2])
    assert (tmp_path / "run" / "artifacts" / "web" / "model.json").exists()


def test_a_backend_the_recipe_asks_for_but_cannot_run_fails_the_artifact(tmp_path, write_recipe, models_dir):
    recipe = write_recipe({"name": "nonode", "model": {"path": str(models_dir / "tiny_conv.h5")},
                           "exports": [{"name": "web", "format": "tfjs_graph", "backends": ["tfjs-wasm"]}],
                           "benchmark": {"enabled": False}})
    result = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), env=_without_node(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAIL web on tfjs-wasm: the recipe asks for this backend, but Node.js" in result.stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["passed"] is False
