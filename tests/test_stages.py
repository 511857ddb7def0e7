"""The train, prune and qat stages on tiny Keras models fitted to scikit-learn's digits (8x8 images, 10 classes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.data.dataset import Dataset
from converter.errors import ModelError, RecipeError
from converter.model_ref import ModelRef
from converter.recipe.schema import PruneStage, QatStage, TrainStage
from converter.stages import prune, qat, train
from converter.tf_env import keras, tfmot


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return Dataset(x, bunch.target.astype(np.int64), [str(c) for c in range(10)], "digits (64 features)")


@pytest.fixture(scope="module")
def digit_images(digits) -> Dataset:
    return Dataset(digits.x.reshape(-1, 8, 8, 1), digits.y, digits.class_names, "digits (8x8x1)")


def _saved(model, folder: Path) -> ModelRef:
    model.save(str(folder))
    return ModelRef(folder, "keras")


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory) -> ModelRef:
    k = keras()
    k.utils.set_random_seed(1)
    inputs = k.Input((64,))
    hidden = k.layers.Dense(32, activation="relu", name="hidden")(inputs)
    outputs = k.layers.Dense(10, activation="softmax", name="out")(hidden)
    return _saved(k.Model(inputs, outputs), tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="module")
def trained_dense(dense_model, digits, tmp_path_factory) -> ModelRef:
    out = tmp_path_factory.mktemp("trained")
    train.run(dense_model, TrainStage(stage="train", epochs=8, learning_rate=0.01), digits, out)
    return ModelRef(out, "keras")


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory) -> ModelRef:
    k = keras()
    k.utils.set_random_seed(2)
    inputs = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = k.layers.Flatten(name="flatten")(x)
    outputs = k.layers.Dense(10, activation="softmax", name="out")(x)
    return _saved(k.Model(inputs, outputs), tmp_path_factory.mktemp("conv"))


def _accuracy(model_ref: ModelRef, data: Dataset) -> float:
    predictions = model_ref.load_keras().predict(data.x, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == data.y))


def _layer(model, name: str):
    return model.get_layer(name)


# ----------------------------------------------------------------------------- train
def test_train_lifts_accuracy_far_above_chance(dense_model, trained_dense, digits):
    assert _accuracy(dense_model, digits) < 0.3
    assert _accuracy(trained_dense, digits) > 0.9


def test_train_twice_with_the_same_seed_gives_identical_weights(dense_model, digits, tmp_path):
    spec = TrainStage(stage="train", epochs=2, seed=7)
    results = [train.run(dense_model, spec, digits, tmp_path / name) for name in ("a", "b")]
    weights = [ModelRef(tmp_path / name, "keras").load_keras().get_weights() for name in ("a", "b")]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    assert results[0].details["history"]["loss"] == results[1].details["history"]["loss"]
    other = TrainStage(stage="train", epochs=2, seed=8)
    train.run(dense_model, other, digits, tmp_path / "c")
    third = ModelRef(tmp_path / "c", "keras").load_keras().get_weights()
    assert not np.array_equal(third[0], weights[0][0])


def test_train_refuses_a_plain_savedmodel(digits, tmp_path):
    with pytest.raises(RecipeError, match="needs a Keras model") as error:
        train.run(ModelRef(tmp_path, "savedmodel"), TrainStage(stage="train"), digits, tmp_path / "out")
    assert error.value.key == "pipeline"


# ----------------------------------------------------------------------------- prune
def test_prune_reaches_target_sparsity_and_skips_the_skipped_layer(trained_dense, digits, tmp_path):
    spec = PruneStage(stage="prune", target_sparsity=0.7, epochs=2, frequency=10, skip_layers=["ou*"])
    result = prune.run(trained_dense, spec, digits, tmp_path)
    pruned = ModelRef(tmp_path, "keras").load_keras()
    kernel = _layer(pruned, "hidden").kernel.numpy()
    assert abs(np.mean(kernel == 0) - 0.7) <= 0.02
    assert np.mean(_layer(pruned, "out").kernel.numpy() == 0) < 0.01
    assert result.details["skipped_layers"] == ["out"]
    assert set(result.details["layer_sparsity"]) == {"hidden"}
    assert result.details["gzip_bytes_after"] < result.details["gzip_bytes_before"]
    assert any("do not run faster" in note for note in result.notes)
    assert _accuracy(ModelRef(tmp_path, "keras"), digits) > 0.8


def test_prune_2_of_4_zeroes_two_in_every_group_of_four_input_channels(conv_model, digit_images, tmp_path):
    spec = PruneStage(stage="prune", structure="2:4", epochs=1)
    result = prune.run(conv_model, spec, digit_images, tmp_path)
    pruned = ModelRef(tmp_path, "keras").load_keras()
    assert set(result.details["layer_sparsity"]) == {"conv2", "out"}
    assert "conv1" in result.details["left_dense"]  # one input channel: no group of 4
    for name in ("conv2", "out"):
        kernel = _layer(pruned, name).kernel.numpy()
        in_channels, out_channels = kernel.shape[-2], kernel.shape[-1]
        groups = kernel.reshape(-1, in_channels // 4, 4, out_channels)
        zeros_per_group = np.sum(groups == 0, axis=2)
        assert np.all(zeros_per_group == 2), name


def test_prune_rejects_a_skip_glob_matching_nothing(trained_dense, digits, tmp_path):
    spec = PruneStage(stage="prune", skip_layers=["hiden"])
    with pytest.raises(RecipeError, match="did you mean 'hidden'"):
        prune.run(trained_dense, spec, digits, tmp_path)


# ----------------------------------------------------------------------------- qat
def test_qat_model_round_trips_with_quantize_wrappers(trained_dense, digits, tmp_path):
    result = qat.run(trained_dense, QatStage(stage="qat", epochs=1), digits, tmp_path)
    loaded = ModelRef(tmp_path, "keras").load_keras()
    wrapper = tfmot().quantization.keras.QuantizeWrapperV2
    assert sorted(layer.layer.name for layer in loaded.layers if isinstance(layer, wrapper)) == ["hidden", "out"]
    assert sorted(result.details["quantized_layers"]) == ["hidden", "out"]
    assert _accuracy(ModelRef(tmp_path, "keras"), digits) > 0.85


@pytest.fixture(scope="module")
def layer_norm_model(tmp_path_factory) -> ModelRef:
    k = keras()
    inputs = k.Input((64,))
    x = k.layers.Dense(32, activation="relu", name="hidden")(inputs)
    x = k.layers.LayerNormalization(name="norm")(x)
    outputs = k.layers.Dense(10, activation="softmax", name="out")(x)
    return _saved(k.Model(inputs, outputs), tmp_path_factory.mktemp("layernorm"))


def test_qat_coverage_error_names_the_unsupported_layer(layer_norm_model, digits, tmp_path):
    with pytest.raises(ModelError, match=r"'norm' \(LayerNormalization\).*layers:"):
        qat.run(layer_norm_model, QatStage(stage="qat"), digits, tmp_path)
    with pytest.raises(ModelError, match="'norm'"):
        qat.run(layer_norm_model, QatStage(stage="qat", layers=["*"]), digits, tmp_path)


def test_qat_layer_globs_quantize_only_the_supported_layers(layer_norm_model, digits, tmp_path):
    result = qat.run(layer_norm_model, QatStage(stage="qat", layers=["hidden", "ou?"]), digits, tmp_path)
    assert sorted(result.details["quantized_layers"]) == ["hidden", "out"]
    assert result.details["unsupported_layers"] == {"norm": "LayerNormalization"}
    ModelRef(tmp_path, "keras").load_keras()


# ----------------------------------------------------------------------------- nested models
@pytest.fixture(scope="module")
def nested_model(tmp_path_factory) -> ModelRef:
    k = keras()
    k.utils.set_random_seed(3)
    inner_in = k.Input((64,))
    inner = k.layers.Dense(32, name="inner_dense")(inner_in)
    inner = k.layers.BatchNormalization(name="inner_bn")(inner)
    inner = k.layers.ReLU(name="inner_relu")(inner)
    backbone = k.Model(inner_in, inner, name="backbone")
    inputs = k.Input((64,))
    outputs = k.layers.Dense(10, activation="softmax", name="out")(backbone(inputs, training=False))
    return _saved(k.Model(inputs, outputs), tmp_path_factory.mktemp("nested"))


def test_qat_inlines_a_nested_model(nested_model, digits, tmp_path):
    before = nested_model.load_keras().predict(digits.x[:32], verbose=0)
    flat, inlined = qat.flatten_nested(nested_model.load_keras())
    assert inlined == ["backbone"]
    np.testing.assert_allclose(flat.predict(digits.x[:32], verbose=0), before, atol=1e-6)
    result = qat.run(nested_model, QatStage(stage="qat", epochs=3, learning_rate=0.01), digits, tmp_path)
    assert {"inner_dense", "out"} <= set(result.details["quantized_layers"])
    assert _accuracy(ModelRef(tmp_path, "keras"), digits) > 0.8


def test_prune_inlines_a_nested_model_called_in_inference_mode(nested_model, digits, tmp_path):
    spec = PruneStage(stage="prune", target_sparsity=0.5, epochs=1, skip_layers=["backbone/inner_b*", "out"])
    result = prune.run(nested_model, spec, digits, tmp_path)
    assert result.details["inlined_models"] == ["backbone"]
    assert sorted(result.details["skipped_layers"]) == ["inner_bn", "out"]
    assert set(result.details["layer_sparsity"]) == {"inner_dense"}
    kernel = ModelRef(tmp_path, "keras").load_keras().get_layer("inner_dense").kernel.numpy()
    assert abs(np.mean(kernel == 0) - 0.5) <= 0.02
