"""The docs say what the code does: every recipe in docs/ validates, and docs/ci.md is the workflow's twin."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from converter.recipe.loader import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
WORKFLOW = ROOT / ".github" / "workflows" / "release-artifacts.yml"
CI_DOC = ROOT / "docs" / "ci.md"
RECIPE_KEYS = {"name", "model", "data", "pipeline", "exports", "verify", "benchmark"}
# A YAML block without `name:` is a fragment: it is validated on top of this recipe.
FRAGMENT_BASE = {
    "name": "docs-fragment", "model": {"path": "model.h5"},
    "data": {"train": {"source": "digits", "split": "train"}, "eval": {"source": "digits", "split": "test"}},
    "exports": [{"name": "tflite", "format": "tflite"}],
}


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced code block."""
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 1)
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def yaml_examples() -> list[tuple[str, str]]:
    return [(f"{path.relative_to(ROOT)}:{line}", body) for path in DOCS
            for language, body, line in fenced_blocks(path.read_text()) if language == "yaml"]


@pytest.mark.parametrize("where, body", yaml_examples(), ids=[w for w, _ in yaml_examples()])
def test_yaml_examples_in_docs_are_valid_recipes(where, body, tmp_path):
    data = yaml.safe_load(body)
    if isinstance(data, dict) and "axes" in data:  # a sweep: beside a copy of the flagship, as in recipes/sweeps/
        from converter.sweep.cells import expand, load_sweep

        (tmp_path / "sweeps").mkdir()
        for copy in (tmp_path / "mobilenet.yaml", tmp_path / "sweeps" / "other.yaml"):
            copy.write_text((ROOT / "recipes" / "mobilenet.yaml").read_text())
        (tmp_path / "sweeps" / "sweep.yaml").write_text(body)
        assert expand(load_sweep(tmp_path / "sweeps" / "sweep.yaml")), where  # every cell, each a valid recipe
        return
    assert isinstance(data, dict) and set(data) <= RECIPE_KEYS, f"{where}: not a recipe or recipe fragment"
    recipe = data if "name" in data else {**FRAGMENT_BASE, **data}
    path = tmp_path / "recipe.yaml"
    path.write_text(body if "name" in data else yaml.safe_dump(recipe, sort_keys=False))
    load_recipe(path, check_files=False)  # raises RecipeError naming the key and line


def test_recipe_blocks_are_marked_yaml():
    """A recipe-like block without the yaml tag would escape the test above."""
    for path in DOCS:
        for language, body, line in fenced_blocks(path.read_text()):
            if language != "yaml":
                assert not re.search(r"^(pipeline|exports):", body, re.M), f"{path.name}:{line}: tag it ```yaml"


def test_the_fragment_check_can_fail(tmp_path):
    broken = "pipeline:\n  - {stage: prune, target_sparsity: 0.5}\n"   # prune without data.train
    data = yaml.safe_load(broken)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**FRAGMENT_BASE, "data": {"eval": FRAGMENT_BASE["data"]["eval"]}, **data}))
    with pytest.raises(Exception, match="needs data.train"):
        load_recipe(path, check_files=False)


# ----------------------------------------------------------------------------- docs/ci.md and the workflow
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def workflow_commands() -> set[str]:
    """The toolkit commands the workflow runs (make ..., .venv/bin/...)."""
    runs = [step["run"] for job in workflow()["jobs"].values() for step in job["steps"] if "run" in step]
    return {line.strip() for run in runs for line in run.splitlines() if line.strip().startswith(("make ", ".venv/bin/"))}


def ci_doc_shell() -> str:
    (body,) = [body for language, body, _ in fenced_blocks(CI_DOC.read_text()) if language == "sh"]
    return body


def test_ci_doc_runs_the_workflow_commands():
    doc = {line.strip() for line in ci_doc_shell().splitlines() if line.strip().startswith(("make ", ".venv/bin/"))}
    assert doc == workflow_commands()


def test_ci_doc_has_the_workflow_settings():
    flow, shell, text = workflow(), ci_doc_shell(), CI_DOC.read_text()
    convert = flow["jobs"]["convert"]
    assert f"export CONVERT_CACHE_DIR={convert['env']['CONVERT_CACHE_DIR']}" in shell
    assert f"export RECIPE={flow['on']['workflow_dispatch']['inputs']['recipe']['default']}" in shell
    assert f"'{flow['on']['workflow_dispatch']['inputs']['recipe']['default']}'" in convert["env"]["RECIPE"]
    upload = next(s for s in convert["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    published = re.search(r"^#\s+(out/.*)$", shell, re.M).group(1).split()
    assert sorted(published) == sorted(upload["with"]["path"].split())
    assert f"retention-days: {upload['with']['retention-days']}" in text
    assert f"if-no-files-found: {upload['with']['if-no-files-found']}" in text
    tags = flow["on"]["push"]["tags"]
    assert tags == ["model-v*"] and "`model-v*`" in text


def test_workflow_permissions_are_least_privilege():
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    for name, job in flow["jobs"].items():
        assert "permissions" in job, f"job {name} inherits instead of declaring its permissions"
        writes = {scope for scope, level in job["permissions"].items() if level == "write"}
        attaches = any("gh release" in step.get("run", "") for step in job["steps"])
        assert writes == ({"contents"} if attaches else set()), name
        if attaches:
            assert job["if"].startswith("startsWith(github.ref, 'refs/tags/model-v")
    for step in flow["jobs"]["convert"]["steps"]:
        if step.get("uses", "").startswith("actions/upload-artifact"):
            assert step["with"]["if-no-files-found"] == "error" and int(step["with"]["retention-days"]) > 0


def test_cli_reference_is_current():
    from converter.cli_reference import render

    assert (ROOT / "docs" / "cli-reference.md").read_text() == render(), "run `make docs` to regenerate"
