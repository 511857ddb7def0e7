"""Sweeps: cells validated before anything runs, shared steps run once, one failed cell does not stop the others,
one table (api.load), a real local Ray cluster giving the same table, and a real local MLflow store."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import digits_data, run_cli
from converter import api
from converter.sweep.run import SweepOptions, run_sweep

DETERMINISTIC = ["top1", "drop", "drop_lo", "drop_hi", "agreement", "size_bytes", "gzip_bytes", "verdict"]


def write_sweep(tmp_path: Path, models_dir: Path, axes: list, **extra) -> Path:
    base = {"name": "base", "model": {"path": str(models_dir / "tiny_conv.h5")},
            "data": {"eval": digits_data("test", 32), "calibration": digits_data("train", 32)},
            "exports": [{"name": "lite", "format": "tflite"}], "benchmark": {"enabled": False},
            # these tests are about the sweep, not about accuracy: on 32 samples one flipped answer is 3 points
            "verify": {"max_top1_drop": 0.2, "min_top1_agreement": None}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    sweep = {"name": "tiny-sweep", "base": "base.yaml", "axes": axes, **extra}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    return tmp_path / "sweep.yaml"


METHODS = {"name": "method", "values": [
    {"label": "tflite", "set": {"exports": [{"name": "lite", "format": "tflite"},
                                            {"name": "lite-int8", "format": "tflite", "quantization": "int8",
                                             "calibration_samples": 16}]}},
    {"label": "onnx", "set": {"exports": [{"name": "onnx-int8", "format": "onnx", "quantization": "int8",
                                           "calibration_samples": 16}]}}]}
SAMPLES = {"name": "samples", "key": "verify.limit", "values": [24, 32]}


def test_every_cell_is_validated_before_anything_runs(models_dir, tmp_path):
    path = write_sweep(tmp_path, models_dir, [METHODS, {"name": "opset", "key": "exports.0.opset", "values": [13, 99]}])
    result = run_cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [  # every bad cell, each named with its values; the good one (onnx-13) is not listed
        "error: cell tflite-13 (method=tflite, opset=13): exports.0.opset (set by the sweep): unknown key 'opset'",
        "error: cell tflite-99 (method=tflite, opset=99): exports.0.opset (set by the sweep): unknown key 'opset'",
        "error: cell onnx-99 (method=onnx, opset=99): exports.0.opset (set by the sweep): input should be less than "
        "or equal to 18"], result.stderr
    assert not (tmp_path / "out").exists()
    checked = run_cli("validate", str(path))  # `convert validate` knows a sweep file, and checks every cell
    assert checked.returncode == 2 and [line for line in checked.stderr.splitlines() if line.startswith("error: ")] == errors


def test_validate_checks_a_sweep_file_cell_by_cell(models_dir, tmp_path):
    path = write_sweep(tmp_path, models_dir, [METHODS, SAMPLES])
    result = run_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: sweep tiny-sweep: 4 cell(s) over method (2), samples (2), every cell a valid recipe"
    as_json = json.loads(run_cli("validate", str(path), "--json").stdout)
    assert as_json["ok"] and sorted(as_json["cells"]) == ["onnx-24", "onnx-32", "tflite-24", "tflite-32"]
    refused = run_cli("validate", str(path), "--set", "verify.limit=8")
    assert refused.returncode == 2 and refused.stderr.startswith("error: --set: applies to recipes")


def test_a_sweep_shares_steps_writes_one_table_and_resumes(models_dir, tmp_path, own_cache):
    path = write_sweep(tmp_path, models_dir, [METHODS, SAMPLES])
    plan = run_cli("sweep", str(path), "--plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("sweep tiny-sweep: 4 cells") and "shared between cells" in plan.stdout
    result = run_sweep(path, SweepOptions(out=tmp_path / "out", jobs=2))
    assert result.passed, result.cells
    sources = [e for e in own_cache.iterdir() if e.name.startswith("source-")]
    assert len(sources) == 1  # four cells, one model: loaded once
    frame = api.load(tmp_path / "out")
    assert len(frame) == 6  # two tflite cells with two artifacts each, two onnx cells with one
    assert set(frame["method"]) == {"tflite", "onnx"} and set(frame["samples"].astype(str)) == {"24", "32"}
    assert ((frame["top1_lo"] <= frame["top1"]) & (frame["top1"] <= frame["top1_hi"])).all()
    for cell in ("tflite-24", "onnx-32"):
        assert (tmp_path / "out" / "cells" / cell / "report.html").is_file()
    assert "Top-1 drop by method and model" in (tmp_path / "out" / "sweep.md").read_text()
    # a cell is an ordinary recipe: run alone, cold (a cache of its own), it gives the sweep's rows
    single = api.run(tmp_path / "out" / "cells" / "onnx-32" / "recipe.yaml", out=tmp_path / "single",
                     cache_dir=tmp_path / "cold-cache", explain=False)
    in_sweep = frame[frame["cell"] == "onnx-32"].to_dict("records")
    alone = api.load(tmp_path / "single").to_dict("records")
    assert [[r[c] for c in DETERMINISTIC] for r in alone] == [[r[c] for c in DETERMINISTIC] for r in in_sweep]
    assert single.data["recipe_hash"] == json.loads((tmp_path / "out" / "cells" / "onnx-32" / "report.json").read_text())["recipe_hash"]
    again = run_sweep(path, SweepOptions(out=tmp_path / "out", jobs=1))  # resumes: every step from the cache
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert again.passed and sweep["cache_hits"] == sweep["steps"]


def test_one_failed_cell_is_reported_and_the_others_run(models_dir, tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((8, 8, 8, 3), np.float32), y=np.zeros(8, np.int64))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((8, 5, 5, 3), np.float32), y=np.zeros(8, np.int64))  # does not fit the model
    axis = {"name": "data", "values": [{"label": "fits", "set": {"data.eval": {"source": "arrays", "path": str(good)}}},
                                       {"label": "misfit", "set": {"data.eval": {"source": "arrays", "path": str(bad)}}}]}
    path = write_sweep(tmp_path, models_dir, [axis])
    result = run_cli("sweep", str(path), "--out", str(tmp_path / "out"), "-j", "1")
    assert result.returncode == 1, result.stderr[-2000:]
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    by_name = {c["name"]: c for c in sweep["cells"]}
    assert by_name["fits"]["passed"] and not by_name["misfit"]["passed"]
    assert any("do not fit the model input" in e for e in by_name["misfit"]["errors"])
    assert "FAIL cell misfit" in result.stderr
    log = (tmp_path / "out" / "convert.log").read_text()  # the runtimes' own output: in the log, off the console
    assert "XNNPACK" in log and "XNNPACK" not in result.stderr


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")  # an extra of the package; make install installs it, so CI runs this
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024)
    yield ray
    ray.shutdown()


def test_a_local_ray_cluster_gives_the_same_table(models_dir, tmp_path, ray_cluster):
    path = write_sweep(tmp_path, models_dir, [METHODS])
    local = run_sweep(path, SweepOptions(out=tmp_path / "local", cache_dir=tmp_path / "cache-local", jobs=1))
    on_ray = run_sweep(path, SweepOptions(out=tmp_path / "ray", cache_dir=tmp_path / "cache-ray", executor="ray"))
    assert local.passed and on_ray.passed
    key = lambda row: (row["cell"], row["artifact"], row["backend"])  # noqa: E731
    assert [[row[c] for c in DETERMINISTIC] for row in sorted(local.table, key=key)] == \
        [[row[c] for c in DETERMINISTIC] for row in sorted(on_ray.table, key=key)]
    assert json.loads((tmp_path / "ray" / "sweep.json").read_text())["executor"] == "ray"
    # convert compare pairs the two sweeps cell by cell: the same images, the same answers, no change
    compared = run_cli("compare", str(tmp_path / "local"), str(tmp_path / "ray"), "--json", "--fail-on-regression")
    assert compared.returncode == 0, compared.stderr
    data = json.loads(compared.stdout)
    assert data["kind"] == "sweep" and data["regressions"] == [] and len(data["rows"]) == len(local.table)
    deltas = [run["delta"] for row in data["rows"] for run in row["runs"] if "delta" in run]
    assert deltas and all(d["method"] == "paired" and d["top1_change"] == 0 for d in deltas)
    assert {row["artifact"].split("/")[0] for row in data["rows"]} == {"tflite", "onnx"}
    assert any((tmp_path / "cache-ray").glob("export-*"))  # the tasks wrote into the shared cache


def test_mlflow_logs_every_cell_to_a_real_local_store(models_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, models_dir, [SAMPLES])
    run_sweep(path, SweepOptions(out=tmp_path / "out", mlflow=True, jobs=1))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("tiny-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["24", "32"]
    for run in runs:
        assert run.data.params["axis.samples"] == run.info.run_name
        assert run.data.params["verify.limit"] == run.info.run_name
        assert 0 <= run.data.metrics["lite.tflite.top1"] <= 1
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.json", "manifest.json", "results.csv"}


def test_the_shipped_sweeps_validate_and_plan(tmp_path):
    from conftest import ROOT

    sweeps = sorted((ROOT / "recipes" / "sweeps").glob("*.yaml"))
    assert sweeps
    for sweep in sweeps:
        result = run_cli("sweep", str(sweep), "--plan", "--cache-dir", str(tmp_path / "empty-cache"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert " 0 cached" in result.stdout.splitlines()[0]


def test_compare_counts_a_cell_the_new_sweep_lost_as_a_regression(tmp_path):
    for name, cells in (("old", ["int8"]), ("new", ["float"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(json.dumps(
            {"name": name, "passed": True, "cells": [{"name": c} for c in cells]}))
    result = run_cli("compare", str(tmp_path / "old"), str(tmp_path / "new"), "--fail-on-regression")
    assert result.returncode == 1 and "REGRESSION cell int8 in new: not in this sweep" in result.stderr
