"""The pinned set installs and imports together in one process, with Keras 2 in force."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_pinned_packages_import_together():
    code = """
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf, tf_keras, tensorflow_decision_forests, ydf, tensorflowjs
import tensorflow_model_optimization as tfmot, tf2onnx, onnx, onnxruntime
from ai_edge_litert.interpreter import Interpreter
from tensorflowjs.converters import tf_saved_model_conversion_v2  # fails with a protobuf VersionError on newer ydf
assert tf.__version__ == "2.19.0", tf.__version__
assert tf.keras.__name__.startswith("tf_keras") or tf.keras.Model is tf_keras.Model
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_constraints_pin_the_anchors():
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    expected = {"tensorflow": "2.19.0", "tf-keras": "2.19.0", "tensorflow-decision-forests": "1.12.0", "ydf": "0.13.0",
                "tensorflowjs": "4.22.0", "tensorflow-model-optimization": "0.8.1", "tf2onnx": "1.17.0"}
    normalised = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    for name, version in expected.items():
        assert normalised.get(name) == version, name
    assert "onnxruntime" in normalised and "onnx" in normalised


def test_help_is_fast_and_light():
    code = "import sys; sys.argv=['convert','--help']\ntry:\n from converter.cli import main; main()\nexcept SystemExit: pass\nprint('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "False"
