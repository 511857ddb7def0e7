"""The real pretrained MobileNet v1 0.25 on the 1000 ImageNet photos in ../shared (recipes/mobilenet-imagenet.yaml)."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, SHARED, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SHARED / "models" / "mobilenet_2_5_128_tf.h5").exists(), reason="../shared is absent")]

FLOAT = ("savedmodel", "tflite-float32", "onnx-float32", "tfjs-float32", "tfjs-layers")


@pytest.fixture(scope="module")
def imagenet_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagenet")
    # --no-explain: the maps of its two intended collapses are measured in docs/explain.md, not asserted here
    result = run_cli("run", "recipes/mobilenet-imagenet.yaml", "--out", str(out), "--no-benchmark", "--no-explain",
                     cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]  # the uint8 and dynamic-int8 collapses fail, by design
    return json.loads((out / "report.json").read_text()), result


def evaluations(report, name):
    artifact = next(a for a in report["artifacts"] if a["name"] == name)
    assert artifact["evaluations"], name
    return artifact, artifact["evaluations"]


def test_reference_is_the_real_model(imagenet_report):
    report, _ = imagenet_report
    assert report["reference"]["samples"] == 1000
    assert 0.44 <= report["reference"]["metrics"]["top1"] <= 0.54  # measured here: 45.9 % (1000 photos, one per class)


def test_every_float_artifact_reproduces_the_reference_on_every_backend(imagenet_report):
    report, _ = imagenet_report
    for name in FLOAT:
        artifact, rows = evaluations(report, name)
        expected = {"savedmodel": {"tf"}, "tflite-float32": {"tflite"}, "onnx-float32": {"onnxruntime"},
                    "tfjs-float32": {"tfjs-cpu", "tfjs-wasm", "browser-webgl", "browser-wasm"}}.get(name, {"tfjs-cpu", "tfjs-wasm"})
        assert {e["backend"] for e in rows} == expected
        for e in rows:
            assert abs(e["metrics"]["top1_drop"]) <= 0.005, (name, e["backend"], e["metrics"])
            assert e["metrics"]["top1_agreement"] >= 0.985, (name, e["backend"], e["metrics"])
            assert e["passed"], e["reasons"]


def test_layers_model_was_repaired_to_load_in_tfjs(imagenet_report):
    report, _ = imagenet_report
    artifact, rows = evaluations(report, "tfjs-layers")
    assert any("keepdims" in n or "Reshape" in n for n in artifact["notes"] + artifact["details"].get("repairs", []))


def test_int8_tflite_within_two_points(imagenet_report):
    report, _ = imagenet_report
    _, rows = evaluations(report, "tflite-int8")
    assert rows[0]["metrics"]["top1_drop"] <= 0.02 and rows[0]["passed"]


def test_uint8_tfjs_collapse_fails_with_numbers(imagenet_report):
    report, result = imagenet_report
    artifact, rows = evaluations(report, "tfjs-uint8")
    assert not artifact["passed"]
    for e in rows:
        assert e["metrics"]["top1_drop"] > 0.01 and not e["passed"]
        assert any("top1_drop" in r and "budget max_top1_drop 0.01" in r for r in e["reasons"])
    assert "FAIL tfjs-uint8 on tfjs-cpu: top1_drop" in result.stderr
    uint16, _ = evaluations(report, "tfjs-uint16")
    assert uint16["passed"]


def test_dynamic_int8_onnx_collapse_is_visible(imagenet_report):
    report, _ = imagenet_report
    artifact, rows = evaluations(report, "onnx-dynamic-int8")
    assert rows[0]["metrics"]["top1_drop"] > 0.1 and not artifact["passed"]
    assert any("static QDQ" in w for w in report["warnings"])
