"""The engine: sources, caching, --force, atomic outputs, the run lock, exit codes and bad models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, digits_data, run_cli
from converter import api
from converter.errors import ModelError, RunLocked
from converter.run_lock import hold
from converter.store import Store


def recipe_for(model_path: Path, **extra) -> dict:
    recipe = {"name": "tiny", "model": {"path": str(model_path)}, "data": {"eval": digits_data("test", 48)},
              "exports": [{"name": "reference", "format": "savedmodel"}], "benchmark": {"enabled": False}}
    recipe.update(extra)
    return recipe


def test_run_writes_artifacts_manifest_and_report(models_dir, tmp_path):
    report = api.run(recipe_for(models_dir / "tiny_conv.h5"), out=tmp_path / "run")
    assert report.passed
    out = tmp_path / "run"
    assert (out / "artifacts" / "reference" / "saved_model.pb").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    assert entry["format"] == "savedmodel" and entry["quantization"] == "none"
    assert entry["size_bytes"] == sum(f["size_bytes"] for f in entry["files"]) > 0
    assert 0 < entry["gzip_bytes"] < entry["size_bytes"] and len(entry["sha256"]) == 64
    assert [p["stage"] for p in entry["parents"]] == ["source"]
    assert "tensorflow" in manifest["versions"] and manifest["recipe_hash"]
    data = json.loads((out / "report.json").read_text())
    evaluation = data["artifacts"][0]["evaluations"][0]
    assert evaluation["backend"] == "tf" and evaluation["metrics"]["top1_agreement"] == 1.0
    assert data["reference"]["metrics"]["top1"] > 0.3  # the fixture model learned something
    assert data["artifacts"][0]["latency"] == []
    assert "| reference | savedmodel | none | tf |" in (out / "report.md").read_text()


def test_second_run_is_served_from_cache_and_force_recomputes(models_dir, tmp_path):
    recipe = recipe_for(models_dir / "tiny_conv.h5")
    first = api.run(recipe, out=tmp_path / "run")
    second = api.run(recipe, out=tmp_path / "run")
    assert first.data["run"]["computed"] > 0
    assert second.data["run"]["computed"] == 0 and second.data["run"]["cache_hits"] >= 3
    assert second.artifacts[0]["sha256"] == first.artifacts[0]["sha256"]
    forced = api.run(recipe, out=tmp_path / "run", force=True)
    assert forced.data["run"]["computed"] >= 3


def test_changed_budget_reuses_every_measurement(models_dir, tmp_path):
    exports = [{"name": "reference", "format": "savedmodel"}, {"name": "web", "format": "tfjs_graph", "backends": ["tfjs-wasm"]}]
    first = api.run(recipe_for(models_dir / "tiny_conv.h5", exports=exports), out=tmp_path / "run")
    changed = recipe_for(models_dir / "tiny_conv.h5", exports=exports, verify={"max_top1_drop": 0.5})
    report = api.run(changed, out=tmp_path / "run")
    assert report.data["run"]["computed"] == 0  # budgets are applied to cached measurements
    assert report.artifact("web")["sha256"] == first.artifact("web")["sha256"]
    model_json = json.loads((tmp_path / "run" / "artifacts" / "web" / "model.json").read_text())
    assert model_json["userDefinedMetadata"]["convert"]["class_names"] == [str(i) for i in range(10)]
    renamed = recipe_for(models_dir / "tiny_conv.h5", exports=[exports[0], {**exports[1], "shard_size": "1MB"}])
    assert api.run(renamed, out=tmp_path / "run").data["run"]["computed"] > 0  # an artifact option does recompute


def test_interrupted_entry_is_never_taken_as_done(tmp_path):
    store = Store(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        with store.create("export-x", {}) as (folder, record):
            (folder / "half-written.bin").write_bytes(b"...")
            raise KeyboardInterrupt
    assert not store.has("export-x")
    assert not any(store.root.iterdir())


def test_second_run_into_same_folder_is_refused(tmp_path):
    with hold(tmp_path / "run"):
        code = f"from converter.run_lock import hold\nwith hold(__import__('pathlib').Path({str(tmp_path / 'run')!r})): pass"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode != 0 and "RunLocked" in result.stderr and "another convert run" in result.stderr
    with hold(tmp_path / "run"):
        pass  # released


def test_budget_failure_exits_1_after_writing_everything(models_dir, tmp_path, write_recipe):
    recipe = recipe_for(models_dir / "tiny_conv.h5", verify={"min_snr_db": 1000})  # identical outputs cap at 200 dB
    path = write_recipe(recipe)
    result = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--no-benchmark")
    assert result.returncode == 1, result.stderr
    assert "reference on tf: snr_db 200 < budget min_snr_db 1000" in result.stderr
    assert (tmp_path / "run" / "artifacts" / "reference" / "saved_model.pb").exists()
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["passed"] is False and summary["failed"] == ["reference"]
    passing = run_cli("run", str(write_recipe(recipe_for(models_dir / "tiny_conv.h5"), "ok.yaml")),
                      "--out", str(tmp_path / "ok"), "--summary-file", str(tmp_path / "summary.json"))
    assert passing.returncode == 0, passing.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["passed"] is True


def test_unreadable_model_file_is_a_user_error(tmp_path, write_recipe):
    (tmp_path / "garbage.h5").write_bytes(b"definitely not HDF5")
    result = run_cli("run", str(write_recipe(recipe_for(tmp_path / "garbage.h5"))), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "garbage.h5" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "artifacts").exists()


def test_lambda_layer_needs_trust(tmp_path):
    from converter.tf_env import keras

    k = keras()
    model = k.Sequential([k.layers.Input((4,)), k.layers.Lambda(lambda t: t * 2.0), k.layers.Dense(2)])
    model.save(tmp_path / "lambda.h5")
    with pytest.raises(ModelError, match="Lambda layers.*trust_model_code"):
        api.run(recipe_for(tmp_path / "lambda.h5", data={}), out=tmp_path / "run")
    trusted = recipe_for(tmp_path / "lambda.h5", data={})
    trusted["model"]["trust_model_code"] = True
    assert api.run(trusted, out=tmp_path / "run2").passed


def test_keras3_file_gets_a_clear_error(tmp_path):
    code = ("import keras; m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]); "
            f"m.save({str(tmp_path / 'k3.keras')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={"TF_USE_LEGACY_KERAS": "0", "PATH": "/usr/bin"})
    with pytest.raises(ModelError, match=r"saved by Keras 3.*model.export"):
        api.run(recipe_for(tmp_path / "k3.keras", data={}), out=tmp_path / "run")


def test_imagenet_weights_missing_from_cache_say_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    recipe = {"name": "app", "model": {"application": "MobileNet", "weights": "imagenet",
                                         "args": {"alpha": 0.25, "input_shape": [128, 128, 3]}},
              "exports": [{"name": "sm", "format": "savedmodel"}]}
    with pytest.raises(ModelError, match=r"put mobilenet_2_5_128_tf\.h5 at .*keras-home/models"):
        api.run(recipe, out=tmp_path / "run")


def test_plain_savedmodel_source_with_signature(tmp_path):
    from converter.tf_env import tf

    tf_ = tf()

    class Doubler(tf_.Module):
        @tf_.function(input_signature=[tf_.TensorSpec([None, 3], tf_.float32, name="x")])
        def double(self, x):
            return {"y": x * 2.0}

    module = Doubler()
    tf_.saved_model.save(module, str(tmp_path / "sm"), signatures={"double": module.double})
    recipe = {"name": "sm", "model": {"path": str(tmp_path / "sm"), "signature": "double"},
              "exports": [{"name": "copy", "format": "savedmodel"}], "benchmark": {"enabled": False}}
    report = api.run(recipe, out=tmp_path / "run")
    assert report.passed and report.data["reference"]["format"] == "savedmodel"
    wrong = dict(recipe, model={"path": str(tmp_path / "sm"), "signature": "dubble"})
    with pytest.raises(ModelError, match="no signature 'dubble'.*did you mean 'double'"):
        api.run(wrong, out=tmp_path / "run2")


def test_latency_rows_are_measured_cached_and_rendered(models_dir, tmp_path):
    quick = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.0, "max_seconds": 1.0}
    recipe = recipe_for(models_dir / "tiny_conv.h5", benchmark={"threads": [1], "batch_sizes": [1, 4]},
                        exports=[{"name": "reference", "format": "savedmodel"}, {"name": "tfl", "format": "tflite"}])
    first = api.run(recipe, out=tmp_path / "run", benchmark_overrides=quick)
    rows = first.artifacts[0]["latency"]
    assert [(r["backend"], r["threads"], r["batch"]) for r in rows] == [("tf", 1, 1), ("tf", 1, 4)]
    assert all(r["n"] >= 5 and 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in rows)
    assert all("load_ms" in r and "peak_rss_mb" in r for r in rows)
    second = api.run(recipe, out=tmp_path / "run", benchmark_overrides=quick)
    assert [(r["backend"], r["threads"], r["batch"]) for r in first.artifact("tfl")["latency"]] == [("tflite", 1, 1), ("tflite", 1, 4)]
    # a row timed on a quiet machine is reused as it was; one timed while other processes took the cores is not
    # cached (it is measured again), so this holds whatever else the machine was doing
    noisy = sum(r["noisy"] for a in first.artifacts for r in a["latency"])
    assert second.data["run"]["computed"] == noisy
    for before, after in zip(rows, second.artifacts[0]["latency"]):
        assert after == before or before["noisy"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert first.data["machine"]["cores"] >= 1
