"""The one place TensorFlow is imported: tf_keras (Keras 2) is forced before the first import.

tfmot only works with Keras 2, so every Keras call in the toolkit goes through tf_keras.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # CPU only: no cuInit noise on machines without a GPU
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# tensorflowjs imports tensorflow_decision_forests, whose welcome banner imports IPython whenever
# stdout is not a terminal (pipes, pytest capture); IPython is not a dependency.
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")


def tf():
    """Return the tensorflow module, importing it with legacy Keras set."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def keras():
    """Return tf_keras (Keras 2)."""
    tf()
    import tf_keras

    return tf_keras


def tfmot():
    tf()
    import tensorflow_model_optimization

    return tensorflow_model_optimization
