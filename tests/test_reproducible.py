"""Release artifacts are byte-reproducible: the same model and recipe give the same bytes in two clean runs
(fresh processes, other caches, other folders), and no artifact carries a local path."""
from __future__ import annotations

import json

from conftest import digits_data, run_cli


def test_two_clean_runs_give_byte_identical_artifacts(models_dir, tmp_path, write_recipe):
    recipe = write_recipe({
        "name": "repro", "model": {"path": str(models_dir / "tiny_conv.h5")},
        "data": {"calibration": digits_data("train", 32)},
        "exports": [{"name": "sm", "format": "savedmodel"},
                    {"name": "lite-int8", "format": "tflite", "quantization": "int8", "calibration_samples": 16},
                    {"name": "onnx-int8", "format": "onnx", "quantization": "int8", "calibration_samples": 16},
                    {"name": "graph-uint8", "format": "tfjs_graph", "quantize": {"uint8": ["*"]}},
                    {"name": "layers", "format": "tfjs_layers"}],
        "verify": {"enabled": False}, "benchmark": {"enabled": False}})
    manifests = []
    for run in ("first", "second"):
        result = run_cli("run", str(recipe), "--out", str(tmp_path / run), "--cache-dir", str(tmp_path / f"cache-{run}"))
        assert result.returncode == 0, result.stderr[-2000:]
        manifests.append(json.loads((tmp_path / run / "manifest.json").read_text()))
    first, second = ({a["name"]: a["files"] for a in m["artifacts"]} for m in manifests)
    assert first == second  # every file, with its sha256
    for artifact in first:
        for file in (tmp_path / "first" / "artifacts" / artifact).rglob("*"):
            if file.is_file():
                data = file.read_bytes()
                assert str(tmp_path).encode() not in data and b"convert-cache" not in data, file
