"""The step cache shared by every recipe: reuse across recipes, concurrent runs, entries edited in place."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, digits_data, run_cli
from converter import api


class Recorder:
    """Executor events, kept."""

    def __init__(self):
        self.outcomes = []

    def planned(self, steps, cached):
        pass

    def started(self, step):
        pass

    def finished(self, outcome):
        self.outcomes.append(outcome)

    def log(self, message):
        pass

    def by_kind(self, kind):
        return [o for o in self.outcomes if o.step.kind == kind]


def trained(models_dir, name: str, exports: list[dict]) -> dict:
    return {"name": name, "model": {"path": str(models_dir / "tiny_conv.h5")},
            "data": {"train": digits_data("train", 64), "eval": digits_data("test", 32)},
            "pipeline": [{"stage": "train", "epochs": 1, "batch_size": 32}],
            "exports": exports, "benchmark": {"enabled": False}}


def test_a_second_recipe_reuses_the_first_ones_source_and_training(models_dir, tmp_path):
    first = Recorder()
    api.run(trained(models_dir, "one", [{"name": "sm", "format": "savedmodel"}]), out=tmp_path / "one", events=first)
    assert [o.cached for o in first.by_kind("stage")] == [False]
    second = Recorder()
    report = api.run(trained(models_dir, "two", [{"name": "lite", "format": "tflite"}]), out=tmp_path / "two",
                     events=second)
    assert [o.cached for o in second.by_kind("source") + second.by_kind("stage")] == [True, True]
    assert [o.cached for o in second.by_kind("export")] == [False]
    assert report.data["stages"][0]["id"] == first.by_kind("stage")[0].step.id
    assert report.passed


def test_two_runs_sharing_the_cache_at_once_stay_safe(models_dir, tmp_path, write_recipe):
    recipe = write_recipe(trained(models_dir, "same", [{"name": "sm", "format": "savedmodel"},
                                                       {"name": "lite", "format": "tflite"}]))
    env = {"CONVERT_CACHE_DIR": str(tmp_path / "shared-cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "converter", "run", str(recipe), "--out", str(tmp_path / f"run{i}")],
                              cwd=ROOT, env={**__import__("os").environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    results = [p.communicate(timeout=900) + (p.returncode,) for p in procs]
    assert [code for _, _, code in results] == [0, 0], [err[-2000:] for _, err, _ in results]
    manifests = [json.loads((tmp_path / f"run{i}" / "manifest.json").read_text()) for i in (1, 2)]
    assert [a["sha256"] for a in manifests[0]["artifacts"]] == [a["sha256"] for a in manifests[1]["artifacts"]]
    assert not list((tmp_path / "shared-cache").glob(".tmp-*"))
    computed = [json.loads(out.strip().splitlines()[-1])["cache_hits"] for out, _, _ in results]
    assert max(computed) > 0  # one of them waited for the other's steps and reused them


def test_an_artifact_edited_in_place_does_not_touch_the_cache(models_dir, tmp_path):
    recipe = trained(models_dir, "edit", [{"name": "lite", "format": "tflite"}])
    first = api.run(recipe, out=tmp_path / "run")
    shipped = tmp_path / "run" / "artifacts" / "lite" / "model.tflite"
    shipped.write_bytes(shipped.read_bytes()[:100])  # a tool truncates the artifact in place
    again = api.run(recipe, out=tmp_path / "run")
    assert again.passed and again.artifact("lite")["sha256"] == first.artifact("lite")["sha256"]
    assert shipped.stat().st_size == first.artifact("lite")["size_bytes"]


def test_a_cache_entry_edited_in_place_is_recomputed(models_dir, tmp_path, own_cache):
    recipe = trained(models_dir, "edit", [{"name": "lite", "format": "tflite"}])
    first = api.run(recipe, out=tmp_path / "run")
    entry = own_cache / first.artifact("lite")["id"]
    (entry / "artifact" / "model.tflite").write_bytes(b"corrupt")
    messages = []
    again = api.run(recipe, out=tmp_path / "run", log=messages.append)
    assert again.passed and again.artifact("lite")["sha256"] == first.artifact("lite")["sha256"]
    assert any("no longer matches its recorded hashes" in m for m in messages)
    assert again.data["run"]["computed"] >= 1


def test_cache_info_and_prune(models_dir, tmp_path, write_recipe, own_cache):
    api.run(trained(models_dir, "p", [{"name": "sm", "format": "savedmodel"}]), out=tmp_path / "run")
    info = run_cli("cache", "info")
    assert info.returncode == 0 and str(own_cache) in info.stdout and "stage" in info.stdout
    refused = run_cli("cache", "prune")
    assert refused.returncode == 2 and refused.stderr.startswith("error: cache prune: say what to remove")
    pruned = run_cli("cache", "prune", "--max-size", "1KB")
    assert pruned.returncode == 0 and pruned.stdout.startswith("removed ")
    assert sum(p.stat().st_size for p in own_cache.rglob("*") if p.is_file() and ".locks" not in p.parts) < 2048
    everything = run_cli("cache", "prune", "--all")
    assert everything.returncode == 0 and not [p for p in own_cache.iterdir() if not p.name.startswith(".")]
