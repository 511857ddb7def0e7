"""Recipe validation: one fixture recipe per failure mode, interpolation, overrides and paths."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_RECIPES, ROOT, SHARED, run_cli
from converter.errors import RecipeError
from converter.recipe.loader import load_recipe

BROKEN = sorted(FIXTURE_RECIPES.glob("*.yaml"))


def expectation(path: Path) -> tuple[str, str]:
    key, _, text = path.read_text().splitlines()[0].removeprefix("# expect:").partition("|")
    return key.strip(), text.strip()


@pytest.mark.parametrize("recipe", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_recipe_names_key_and_line(recipe):
    key, text = expectation(recipe)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert message.startswith(key), message
    assert text in message
    if key != "<recipe>" or "YAML" in text:
        assert caught.value.line is not None and f"line {caught.value.line}" in message


@pytest.mark.parametrize("recipe", BROKEN[:5], ids=[p.stem for p in BROKEN[:5]])
def test_validate_cli_exit_2_with_one_error_line(recipe):
    result = run_cli("validate", str(recipe))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback():
    result = run_cli("validate", str(FIXTURE_RECIPES / "wrong_type.yaml"), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def good_recipe(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.h5").write_bytes(b"not read by validate")
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: ok\n"
        "model: {path: models/m.h5}\n"
        "data:\n  eval:\n    source: digits\n    split: test\n    limit: ${LIMIT:-32}\n"
        "exports:\n  - {name: web, format: tfjs_graph, shard_size: 1MB}\n"
        "  - {name: onnx-dyn, format: onnx, quantization: dynamic_int8}\n")
    return path


def test_paths_resolve_against_recipe_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    loaded = load_recipe(good_recipe(tmp_path))
    assert loaded.recipe.model.path == (tmp_path / "models" / "m.h5").resolve()


def test_interpolation_default_and_environment(tmp_path, monkeypatch):
    path = good_recipe(tmp_path)
    monkeypatch.delenv("LIMIT", raising=False)
    assert load_recipe(path).recipe.data.eval.limit == 32
    monkeypatch.setenv("LIMIT", "7")
    assert load_recipe(path).recipe.data.eval.limit == 7


def test_set_overrides_values_and_is_validated(tmp_path):
    path = good_recipe(tmp_path)
    loaded = load_recipe(path, ["exports.0.shard_size=2MB", "verify.max_top1_drop=0.05", "benchmark.threads=[1]"])
    assert loaded.recipe.exports[0].shard_size == 2 * 1024 * 1024
    assert loaded.recipe.verify.max_top1_drop == 0.05
    assert loaded.recipe.benchmark.threads == [1]
    with pytest.raises(RecipeError, match=r"exports.1.opset .from --set."):
        load_recipe(path, ["exports.1.opset=x"])


def test_dynamic_int8_onnx_is_steered_to_static(tmp_path):
    warnings = load_recipe(good_recipe(tmp_path)).warnings
    assert any("static QDQ" in w and "onnx-dyn" in w for w in warnings)


def test_validate_does_not_import_tensorflow(tmp_path):
    code = ("import sys; from converter.api import validate; validate(sys.argv[1]); "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'tf2onnx', 'tensorflowjs') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(good_recipe(tmp_path))], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_recipe_validates():
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        needs_shared = "shared/" in recipe.read_text()
        load_recipe(recipe, check_files=SHARED.exists() or not needs_shared)


def test_recipe_reference_is_current():
    from converter.recipe.reference import render

    assert (ROOT / "docs" / "recipe-reference.md").read_text() == render(), "run `make docs` to regenerate"
