"""Source models: a Keras application built from scratch is the same model in every process."""
from __future__ import annotations

import numpy as np

from converter.recipe.schema import ModelSpec
from converter.sources import load_source

TINY = {"application": "MobileNet", "args": {"alpha": 0.25, "input_shape": [32, 32, 3], "classes": 4}}


def _built(spec: ModelSpec, folder):
    from converter.tf_env import keras

    ref = load_source(spec, folder)
    return keras().models.load_model(str(ref.path), compile=False)


def _initial_weights(spec: ModelSpec, folder) -> list[np.ndarray]:
    return _built(spec, folder).get_weights()


def test_application_without_weights_is_built_from_its_seed(tmp_path):
    # Each build draws from the global random state: without model.seed the second build's weights differ
    first, again = _built(ModelSpec(**TINY), tmp_path / "a"), _built(ModelSpec(**TINY), tmp_path / "b")
    other = _initial_weights(ModelSpec(**TINY, seed=1), tmp_path / "c")
    assert all(np.array_equal(x, y) for x, y in zip(first.get_weights(), again.get_weights()))
    assert not np.array_equal(first.get_weights()[0], other[0])
    # Names reach every artifact (TF.js and ONNX node names): the second build in a process must not be named
    # global_average_pooling2d_1 where a fresh process says global_average_pooling2d
    names = [layer.name for layer in first.layers]
    assert names == [layer.name for layer in again.layers] and "global_average_pooling2d" in names
