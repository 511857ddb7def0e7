"""Shared fixtures: tiny models (a few KB) built once per session, and a recipe writer."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import converter.tf_env  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before anything imports TensorFlow)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE_RECIPES = Path(__file__).parent / "fixtures" / "recipes"


def build_dense():
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input((8,)), k.layers.Dense(16, activation="relu"),
                          k.layers.Dense(3, activation="softmax")])
    return model


def build_conv(channels: int = 3):
    """A tiny conv net on 8x8 images with 10 classes (scikit-learn digits fit it)."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((8, 8, channels))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    outputs = k.layers.Dense(10, activation="softmax")(x)
    return k.Model(inputs, outputs)


FLAT_X = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)


def build_flat_conv():
    """Conv (216 weights) -> Flatten -> Dense (5120 weights: big enough for dynamic-range quantization and
    above onnx.save's 1 KB external-data threshold)."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = k.layers.Flatten()(x)
    return k.Model(inputs, k.layers.Dense(10, activation="softmax")(x))


BN_X = np.random.default_rng(0).uniform(0, 1, size=(32, 8, 8, 3)).astype(np.float32)


def build_bn_net():
    """Conv net whose BatchNormalizations follow a padded strided convolution and a depthwise one (4x4 maps),
    then a convolution down to 1x1 and a depthwise convolution on the 1x1 map; linear output, no training.

    The weights are set, not trained: the kernels of each convolution are scaled per output channel over
    two decades, and each BatchNormalization holds the mean and variance of its input on BN_X (what
    training would leave), so that the convolutions' raw outputs span very different ranges per channel,
    as trained depthwise convolutions do, and every BatchNormalization renormalizes them.
    """
    from converter.tf_env import keras

    k = keras()
    layers = k.layers
    k.utils.set_random_seed(0)
    inputs = k.Input((8, 8, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)  # padded + valid + strided: 4x4
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.Conv2D(16, 4, use_bias=False)(x)  # down to 1x1
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(1, use_bias=False)(x)  # depthwise on the 1x1 map
    x = layers.BatchNormalization()(x)
    model = k.Model(inputs, layers.Flatten()(x))
    rng = np.random.default_rng(0)
    for before, norm in zip(model.layers, model.layers[1:]):
        if not isinstance(norm, layers.BatchNormalization):
            continue
        (kernel,) = before.get_weights()
        channels = norm.gamma.shape[0]
        spread = 10.0 ** rng.permutation(np.linspace(-1, 1, channels))
        shape = (1, 1, channels, 1) if isinstance(before, layers.DepthwiseConv2D) else (1, 1, 1, channels)
        before.set_weights([kernel * spread.reshape(shape)])
        raw = k.Model(model.input, before.output)(BN_X).numpy().reshape(-1, channels)
        norm.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels), raw.mean(0), raw.var(0)])
    return model


SATURATING_X = np.random.default_rng(0).uniform(0, 1, size=(8, 4, 4, 16)).astype(np.float32)


def build_saturating_conv():
    """One 1x1 convolution, 16 inputs in [0, 1] to 8 outputs, every weight positive (0.5 to 1): in 8-bit,
    adjacent products 255 * 127 add up past the int16 range that onnxruntime's U8S8 kernels use without VNNI."""
    from converter.tf_env import keras

    k = keras()
    conv = k.layers.Conv2D(8, 1, use_bias=False)
    inputs = k.Input((4, 4, 16))
    model = k.Model(inputs, k.layers.Flatten()(conv(inputs)))
    conv.set_weights([np.random.default_rng(0).uniform(0.5, 1.0, size=(1, 1, 16, 8)).astype(np.float32)])
    return model


@pytest.fixture(scope="session")
def conv(tmp_path_factory):
    """(ModelRef of the flat conv net as a Keras SavedModel, the Keras model's outputs on FLAT_X)."""
    from converter.model_ref import ModelRef

    model = build_flat_conv()
    folder = tmp_path_factory.mktemp("flat") / "conv"
    model.save(str(folder))
    return ModelRef(folder, "keras"), model.predict(FLAT_X, verbose=0)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """tiny_dense.h5, tiny_conv.h5 and tiny_conv_savedmodel/ (Keras SavedModel), trained a little on digits."""
    from sklearn.datasets import load_digits

    from converter.tf_env import keras

    folder = tmp_path_factory.mktemp("models")
    dense = build_dense()
    dense.save(folder / "tiny_dense.h5")
    conv = build_conv()
    digits = load_digits()
    x = np.repeat(digits.images[..., None] / 16.0, 3, axis=-1).astype(np.float32)
    conv.compile(keras().optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    conv.fit(x, digits.target, epochs=15, batch_size=64, verbose=0)
    conv.save(folder / "tiny_conv.h5")
    conv.save(folder / "tiny_conv_savedmodel", save_format="tf")
    return folder


def pytest_collection_modifyitems(config, items):
    """The zoo runs only when asked for (-m zoo, or make zoo): it takes about an hour."""
    if "zoo" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the model zoo runs with -m zoo (make zoo)")
    for item in items:
        if "zoo" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The suite never touches ~/.cache/convert: fixtures wider than one test (the real model's run, built
    models) start `convert` before `own_cache` exists, so they get one empty cache for the session. A second
    run on the same machine is then as cold as a clean CI machine."""
    previous = os.environ.get("CONVERT_CACHE_DIR")
    os.environ["CONVERT_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-cache"))
    yield Path(os.environ["CONVERT_CACHE_DIR"])
    if previous is None:
        os.environ.pop("CONVERT_CACHE_DIR", None)
    else:
        os.environ["CONVERT_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test gets an empty step cache of its own (CONVERT_CACHE_DIR), also for the CLI it starts."""
    monkeypatch.setenv("CONVERT_CACHE_DIR", str(tmp_path / "convert-cache"))
    return tmp_path / "convert-cache"


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(dict or yaml text, name='recipe.yaml') -> path of a recipe file in tmp_path."""

    def write(content, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `convert` CLI in a fresh process and capture its output."""
    return subprocess.run([sys.executable, "-m", "converter", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=900)


def digits_data(split: str, limit: int | None = None) -> dict:
    spec = {"source": "digits", "split": split, "preprocess": {"scale": "1/16", "channels": "rgb"}}
    if limit:
        spec["limit"] = limit
    return spec
