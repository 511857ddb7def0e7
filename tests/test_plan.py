"""The plan: frozen steps whose ids hash contents and tool versions (never paths), built without TensorFlow."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, digits_data, run_cli
from converter import api
from converter.plan import Step


def tiny_recipe(model: Path, **extra) -> dict:
    recipe = {"name": "tiny", "model": {"path": str(model)}, "data": {"eval": digits_data("test", 32)},
              "exports": [{"name": "reference", "format": "savedmodel"}, {"name": "lite", "format": "tflite"},
                          {"name": "web", "format": "tfjs_graph"}],
              "benchmark": {"threads": [1]}}
    recipe.update(extra)
    return recipe


def test_plan_needs_no_tensorflow():
    code = ("import sys; from converter import api; plan = api.plan('recipes/mobilenet.yaml'); "
            "assert len(plan.steps) > 40, len(plan.steps); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'onnxruntime', "
            "'tensorflowjs', 'tf2onnx', 'ai_edge_litert')); assert not heavy, heavy; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_plan_command_shows_the_tree_and_what_is_cached(models_dir, write_recipe, tmp_path):
    path = write_recipe(tiny_recipe(models_dir / "tiny_conv.h5"))
    before = run_cli("plan", str(path))
    assert before.returncode == 0, before.stderr
    assert "0 cached" in before.stdout.splitlines()[0]
    assert "export lite" in before.stdout and "check web on tfjs-wasm" in before.stdout
    api.run(tiny_recipe(models_dir / "tiny_conv.h5"), out=tmp_path / "run", benchmark=False)
    after = run_cli("plan", str(path), "--no-benchmark")
    assert after.returncode == 0, after.stderr
    assert " 0 to run" in after.stdout.splitlines()[0], after.stdout
    assert all(line.lstrip("├└─ ").startswith(("cached", "skipped")) for line in after.stdout.splitlines()
               if "[" in line)


def test_ids_hash_contents_not_paths(models_dir, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(models_dir / "tiny_conv.h5", tmp_path / name / "model.h5")
    first = api.plan(tiny_recipe(tmp_path / "a" / "model.h5"))
    moved = api.plan(tiny_recipe(tmp_path / "b" / "model.h5", name="other-name"))
    assert list(first.steps) == list(moved.steps)
    (tmp_path / "b" / "model.h5").write_bytes((tmp_path / "b" / "model.h5").read_bytes() + b"\0")
    changed = api.plan(tiny_recipe(tmp_path / "b" / "model.h5"))
    assert changed.models["source"].id != first.models["source"].id
    assert all(a.export.id != b.export.id for a, b in zip(first.exports, changed.exports))


def test_a_runtime_upgrade_rechecks_instead_of_reusing(models_dir, monkeypatch):
    from converter import backends, plan

    before = api.plan(tiny_recipe(models_dir / "tiny_conv.h5"))
    monkeypatch.setitem(backends._VERSIONS, "tflite", {"ai-edge-litert": "99.0"})
    after = api.plan(tiny_recipe(models_dir / "tiny_conv.h5"))
    assert after.exports[1].checks["tflite"].id != before.exports[1].checks["tflite"].id
    assert after.exports[1].export.id == before.exports[1].export.id  # the artifact itself is the same
    assert after.exports[2].checks["tfjs-wasm"].id == before.exports[2].checks["tfjs-wasm"].id
    tfjs = before.exports[2].checks["tfjs-wasm"]
    assert tfjs.versions["@tensorflow/tfjs"] == "4.22.0"  # what the Node runner itself reported
    assert plan.STEP_VERSIONS["check"] >= 1


def test_step_ids_are_stable_and_round_trip():
    step = Step("data", "load data.eval", {"spec": {"source": "digits"}}, {}, {"files": "abc"}, {"numpy": "2"},
                {"path": "/somewhere"})
    again = Step.from_json(step.to_json())
    assert again.id == step.id
    assert Step("data", "another label", step.config, {}, step.inputs, step.versions, {"path": "/elsewhere"}).id == step.id


def test_the_package_has_no_import_cycle():
    """Module-level imports inside converter/ form no cycle (imports inside functions are deliberate and lazy)."""
    package = ROOT / "converter"
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        if "node_modules" in path.parts:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imports: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                imports |= {a.name for a in node.names if a.name.startswith("converter")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("converter"):
                imports.add(node.module)
                imports |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = imports
    modules = set(graph)
    graph = {m: {i for i in deps if i in modules and i != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, " -> ".join(trail + [module, dep])
            if dep not in state:
                visit(dep, trail + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
