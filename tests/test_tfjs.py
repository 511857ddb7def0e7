"""TF.js exports and runtime: real tensorflowjs conversions run by real TF.js in Node.js."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import converter.tf_env  # noqa: F401  (legacy Keras before TensorFlow loads)
from converter.errors import ConversionError, DependencyError
from converter.exports import tfjs as tfjs_export
from converter.exports.base import ExportContext
from converter.formats import open_runtime, tolerance
from converter.model_ref import ModelRef
from converter.recipe.schema import Quantize, TfjsGraphExport, TfjsLayersExport
from converter.runtimes import tfjs as tfjs_runtime

CTX = ExportContext(build_id="hash123", class_names=["a", "b", "c", "d", "e"])
BACKENDS = ("tfjs-cpu", "tfjs-wasm")


def _save(model, folder: Path) -> ModelRef:
    model.save(str(folder), save_format="tf")
    return ModelRef(folder, "keras")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """A tiny conv net whose GlobalAveragePooling2D keeps dims (as in Keras MobileNet v1), its inputs and outputs."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = k.layers.Conv2D(5, 1, name="conv_preds")(x)
    x = k.layers.Flatten(name="flat")(x)
    model = k.Model(inputs, k.layers.Softmax(name="probs")(x))
    x = np.random.RandomState(0).rand(4, 8, 8, 3).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("conv") / "model"), x, model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A Dense net on 8 features with ~108 KB of float32 weights."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input((8,)), k.layers.Dense(256, activation="relu", name="hidden"),
                          k.layers.Dense(96, name="head")])
    x = np.random.RandomState(1).rand(4, 8).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("dense") / "model"), x, model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def conv_graph(conv, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv_graph") / "a"
    return out, tfjs_export.export_graph(conv[0], TfjsGraphExport(name="g", format="tfjs_graph"), out, CTX)


def _manifest(folder: Path) -> list[dict]:
    return json.loads((folder / "model.json").read_text())["weightsManifest"]


def _run(folder: Path, fmt: str, backend: str, x: np.ndarray):
    with open_runtime(backend, fmt, folder) as runtime:
        return runtime.run([x])[0], runtime


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_round_trip_matches_keras(conv, conv_graph, backend):
    _, x, expected = conv
    out, runtime = _run(conv_graph[0], "tfjs_graph", backend, x)
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert np.abs(out - expected).max() <= tolerance("tfjs_graph", "none").max_abs_diff
    described = runtime.describe()
    assert described["backend"] == backend and described["runtime"] == "tfjs" and described["version"] == "4.22.0"
    assert described["settings"]["backend"] == backend.split("-")[1]
    if backend == "tfjs-wasm":
        assert isinstance(described["settings"]["simd"], bool) and described["settings"]["threads"] >= 1


def test_metadata_comes_through_tfjs(conv_graph, conv):
    _, runtime = _run(conv_graph[0], "tfjs_graph", "tfjs-cpu", conv[1])
    assert runtime.user_metadata == {"convert": {"build_id": "hash123", "class_names": ["a", "b", "c", "d", "e"]}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_keepdims_pooling_is_repaired_and_matches_keras(conv, tmp_path, backend):
    model, x, expected = conv
    result = tfjs_export.export_layers(model, TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path, CTX)
    assert len(result.details["repairs"]) == 1 and "gap" in result.notes[0]
    layers = json.loads((tmp_path / "model.json").read_text())["modelTopology"]["model_config"]["config"]["layers"]
    names = [layer["name"] for layer in layers]
    assert names.index("gap_keepdims") == names.index("gap") + 1
    assert layers[names.index("conv_preds")]["inbound_nodes"] == [[["gap_keepdims", 0, 0, {}]]]
    out, runtime = _run(tmp_path, "tfjs_layers", backend, x)
    assert np.abs(out - expected).max() <= tolerance("tfjs_layers", "none").max_abs_diff
    assert runtime.user_metadata["convert"]["build_id"] == "hash123"


def test_unrepaired_keepdims_topology_fails_in_tfjs(conv, tmp_path, monkeypatch):
    """The repair is needed: without it TF.js rejects the model (so the test above can fail)."""
    monkeypatch.setattr(tfjs_export, "repair_topology", lambda topology, keras_model: [])
    tfjs_export.export_layers(conv[0], TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path, CTX)
    with pytest.raises(ConversionError, match="ndim"):
        _run(tmp_path, "tfjs_layers", "tfjs-cpu", conv[1])


def test_shards_follow_shard_size(dense, tmp_path):
    spec = TfjsGraphExport(name="g", format="tfjs_graph", shard_size="32KB")
    result = tfjs_export.export_graph(dense[0], spec, tmp_path, CTX)
    manifest = _manifest(tmp_path)
    total = sum(4 * math.prod(w["shape"]) for group in manifest for w in group["weights"])
    assert 100_000 < total < 120_000
    sizes = [(tmp_path / p).stat().st_size for p in manifest[0]["paths"]]
    assert len(sizes) == math.ceil(total / 32_000) == result.details["shards"] == 4
    assert sizes[:-1] == [32_000] * (len(sizes) - 1) and sum(sizes) == total
    out, _ = _run(tmp_path, "tfjs_graph", "tfjs-wasm", dense[1])
    assert np.abs(out - dense[2]).max() <= 1e-3


def test_uint8_everywhere_quantizes_every_float_weight(dense, tmp_path):
    spec = TfjsGraphExport(name="g", format="tfjs_graph", quantize=Quantize(uint8=["*"]))
    result = tfjs_export.export_graph(dense[0], spec, tmp_path, CTX)
    weights = [w for group in _manifest(tmp_path) for w in group["weights"]]
    assert weights and all(w["quantization"]["dtype"] == "uint8" for w in weights if w["dtype"] == "float32")
    assert result.details["quantized"]["uint8"] == sum(w["dtype"] == "float32" for w in weights)
    out, _ = _run(tmp_path, "tfjs_graph", "tfjs-cpu", dense[1])
    assert _cosine(out, dense[2]) >= tolerance("tfjs_graph", "uint8").min_cosine


def test_quantize_glob_restricts_to_matching_nodes(dense, tmp_path):
    warnings: list[str] = []
    ctx = ExportContext(build_id="t", warn=warnings.append)
    spec = TfjsGraphExport(name="g", format="tfjs_graph", quantize=Quantize(uint8=["*head*"], float16=["*nothing*"]))
    result = tfjs_export.export_graph(dense[0], spec, tmp_path, ctx)
    quantized = {w["name"]: w.get("quantization", {}).get("dtype") for group in _manifest(tmp_path) for w in group["weights"]}
    assert any("head" in name for name in quantized) and any("hidden" in name for name in quantized)
    for name, dtype in quantized.items():
        assert dtype == ("uint8" if "head" in name else None), name
    assert result.details["quantize_unmatched"] == ["float16:*nothing*"] and "*nothing*" in warnings[0]


def test_layers_quantization_and_sharding(dense, tmp_path):
    spec = TfjsLayersExport(name="l", format="tfjs_layers", shard_size="16KB", quantize=Quantize(float16=["hidden/*"]))
    tfjs_export.export_layers(dense[0], spec, tmp_path, CTX)
    manifest = _manifest(tmp_path)
    dtypes = {w["name"]: w.get("quantization", {}).get("dtype") for w in manifest[0]["weights"]}
    assert dtypes == {"hidden/kernel": "float16", "hidden/bias": "float16", "head/kernel": None, "head/bias": None}
    assert all((tmp_path / p).stat().st_size <= 16_000 for p in manifest[0]["paths"]) and len(manifest[0]["paths"]) == 7
    out, _ = _run(tmp_path, "tfjs_layers", "tfjs-wasm", dense[1])
    assert np.abs(out - dense[2]).max() <= tolerance("tfjs_layers", "float16").max_abs_diff


def test_unsupported_op_is_named(tmp_path):
    from converter.tf_env import tf

    t = tf()

    class Gamma(t.Module):
        @t.function(input_signature=[t.TensorSpec([None, 4], t.float32)])
        def __call__(self, x):
            return {"y": t.math.lgamma(x + 1.0) * 2.0}

    module = Gamma()
    t.saved_model.save(module, str(tmp_path / "sm"), signatures=module.__call__)
    with pytest.raises(ConversionError, match=r"Lgamma \(node [^)]*Lgamma\)"):
        tfjs_export.export_graph(ModelRef(tmp_path / "sm", "savedmodel"), TfjsGraphExport(name="g", format="tfjs_graph"),
                                 tmp_path / "out", CTX)


def test_runner_survives_a_bad_request(conv_graph, conv):
    with open_runtime("tfjs-cpu", "tfjs_graph", conv_graph[0]) as runtime:
        with pytest.raises(ConversionError, match="TF.js"):
            runtime.run([np.zeros((1, 5), np.float32)])
        assert runtime.run([conv[1]])[0].shape == conv[2].shape
        timing = runtime.time([conv[1][:1]], {"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 3,
                                               "min_seconds": 0, "max_runs": 3})
    assert len(timing["latencies_ms"]) == 3 and all(ms > 0 for ms in timing["latencies_ms"])


def test_a_hung_runner_is_killed_and_reported(conv_graph, conv, monkeypatch):
    with open_runtime("tfjs-cpu", "tfjs_graph", conv_graph[0]) as runtime:
        monkeypatch.setattr(tfjs_runtime, "CALL_TIMEOUT_S", 1.0)
        with pytest.raises(ConversionError, match="runner .tfjs-cpu. exited"):
            runtime.time([conv[1][:1]], {"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 1, "min_seconds": 60,
                                               "max_runs": 10**9, "max_seconds": 60})


def test_missing_node_modules_is_a_dependency_error(conv_graph, tmp_path, monkeypatch):
    monkeypatch.setenv(tfjs_runtime.NODE_MODULES_ENV, str(tmp_path))
    with pytest.raises(DependencyError, match="npm ci --prefix"):
        open_runtime("tfjs-wasm", "tfjs_graph", conv_graph[0]).load()
    monkeypatch.delenv(tfjs_runtime.NODE_MODULES_ENV)
    monkeypatch.setattr(tfjs_runtime, "JS_DIR", tmp_path / "js")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DependencyError, match="make install"):
        open_runtime("tfjs-cpu", "tfjs_graph", conv_graph[0]).load()


def test_sequential_keepdims_max_pooling_1d_is_repaired(tmp_path):
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input((6, 4)), k.layers.Conv1D(3, 2, name="conv"),
                          k.layers.GlobalMaxPooling1D(keepdims=True, name="pool"), k.layers.Conv1D(2, 1, name="head")])
    x = np.random.RandomState(2).rand(3, 6, 4).astype(np.float32)
    result = tfjs_export.export_layers(_save(model, tmp_path / "model"), TfjsLayersExport(name="l", format="tfjs_layers"),
                                       tmp_path / "out", CTX)
    assert "GlobalMaxPooling1D 'pool'" in result.details["repairs"][0]
    out, _ = _run(tmp_path / "out", "tfjs_layers", "tfjs-cpu", x)
    assert out.shape == (3, 1, 2) and np.abs(out - model.predict(x, verbose=0)).max() <= 1e-4


# ----------------------------------------------------------------------------- per-channel kernels
@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    """Convolution, depthwise, matmul and a bias-free 1x1 convolution whose output channels span 300x in range (as
    batch norms folded into a kernel make them): fixed weights, no training."""
    from converter.tf_env import keras

    k = keras()
    rng = np.random.RandomState(0)
    inputs = k.layers.Input((6, 6, 3))
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu6", name="conv")(inputs)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = k.layers.Conv2D(4, 1, use_bias=False, name="plain")(x)
    x = k.layers.Flatten(name="flat")(x)
    model = k.Model(inputs, k.layers.Dense(3, name="head")(x))
    spread = np.array([0.01, 0.1, 1.0, 3.0])
    for layer in model.layers:
        if layer.weights:
            kernel, *bias = layer.get_weights()
            kernel = rng.normal(0, 1, kernel.shape) * (spread if kernel.shape[-1] == 4 else
                                                        spread[:, None] if kernel.shape[-2] == 4 else 1.0)
            layer.set_weights([kernel.astype(np.float32)] + [b + 0.01 for b in bias])
    x = rng.rand(4, 6, 6, 3).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("ranged") / "model"), model, x


def _restored(folder: Path) -> dict[str, np.ndarray]:
    """Every weight as TF.js restores it (q * scale + min), per-channel kernels times their channel scale."""
    content = json.loads((folder / "model.json").read_text())
    values = {}
    for group in content["weightsManifest"]:
        blob = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            q = w.get("quantization", {})
            dtype = np.dtype(q.get("dtype", w["dtype"]))
            count = int(np.prod(w["shape"], dtype=np.int64))
            data = np.frombuffer(blob, dtype, count, offset).astype(np.float64).reshape(w["shape"])
            offset += count * dtype.itemsize
            values[w["name"]] = data * q["scale"] + q["min"] if "scale" in q else data
    for name in [n for n in values if n.endswith("/channel_scale")]:
        kernel = name[:-len("/channel_scale")]
        s = values.pop(name)
        values[kernel] = (values[kernel].reshape(-1, s.size) * s).reshape(values[kernel].shape)
    return values


def _kernel(values: dict[str, np.ndarray], layer: str) -> str:
    return next(n for n in values if f"/{layer}/" in n and values[n].ndim >= 2)


def test_per_channel_kernels_hold_each_channel_to_its_own_step(ranged, tmp_path):
    """Stored per channel, every kernel value is within half a uint8 step of its own channel's range (2 * s / 255,
    W' spans [-1, 1]), where one range per weight leaves the smallest channel's values on a few steps."""
    _, model, _ = ranged
    per_tensor, per_channel = tmp_path / "tensor", tmp_path / "channel"
    tfjs_export.export_graph(ranged[0], TfjsGraphExport(name="g", format="tfjs_graph", quantize=Quantize(uint8=["*"])),
                             per_tensor, CTX)
    result = tfjs_export.export_graph(ranged[0], TfjsGraphExport(
        name="g", format="tfjs_graph", quantize=Quantize(uint8=["*"], per_channel=["*"])), per_channel, CTX)
    assert result.details["per_channel"] == 4
    tensor_values, channel_values = _restored(per_tensor), _restored(per_channel)
    for layer, trailing in (("conv", 1), ("dw", 2), ("plain", 1), ("head", 1)):
        original = model.get_layer(layer).get_weights()[0].astype(np.float64)
        channels = original.reshape(-1, int(np.prod(original.shape[-trailing:])))
        step = np.abs(channels).max(axis=0) * 2 / 255
        error = np.abs(channel_values[_kernel(channel_values, layer)].reshape(channels.shape) - channels)
        assert (error <= step / 2 * (1 + 1e-5) + 1e-12).all(), layer
        tensor_error = np.abs(tensor_values[_kernel(tensor_values, layer)].reshape(channels.shape) - channels)
        if layer != "head":  # channel 0, the smallest: per channel within 1/255 of its range, one range: >10x that
            assert tensor_error[:, 0].max() / np.abs(channels[:, 0]).max() > 10 / 255, layer


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_channel_graph_runs_the_stored_kernels_exactly(ranged, tmp_path, backend):
    """The rewritten graph (plain op, Mul by the channel scale, AddV2, activation) computes the model with its
    stored weights: TF.js's output equals Keras's with those weights set, within float tolerance."""
    from converter.tf_env import keras

    _, model, x = ranged
    tfjs_export.export_graph(ranged[0], TfjsGraphExport(
        name="g", format="tfjs_graph", quantize=Quantize(uint8=["*"], per_channel=["*"])), tmp_path, CTX)
    values = _restored(tmp_path)
    copy = keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in ("conv", "dw", "plain", "head"):
        weights = copy.get_layer(layer).get_weights()
        copy.get_layer(layer).set_weights([values[_kernel(values, layer)].astype(np.float32)] + weights[1:])
    expected = copy.predict(x, verbose=0)
    out, _ = _run(tmp_path, "tfjs_graph", backend, x)
    assert np.abs(out - expected).max() <= tolerance("tfjs_graph", "none").max_abs_diff * max(1.0, np.abs(expected).max())
    ops = [n["op"] for n in json.loads((tmp_path / "model.json").read_text())["modelTopology"]["node"]]
    assert ops.count("Mul") == 4


def test_per_channel_needs_a_graph_model():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="per_channel"):
        TfjsLayersExport(name="l", format="tfjs_layers", quantize=Quantize(uint8=["*"], per_channel=["*"]))


def test_bias_correction_takes_each_kernels_mean_shift_out_of_its_bias(ranged, tmp_path):
    """Each corrected bias moves by the mean over the calibration samples (and output positions) of the op applied
    to its float input with the kernel's rounding error dW as the kernel: computed here by Keras on every sample,
    there from the mean input read in TF.js. The bias-free 1x1 convolution has nothing to correct."""
    from converter.tf_env import keras

    _, model, _ = ranged
    samples = np.random.RandomState(1).rand(30, 6, 6, 3).astype(np.float32)
    ctx = ExportContext(build_id="hash123", calibration=lambda n: samples[:n])
    kernels = ["*/conv/*Conv2D*", "*dw/depthwise*", "*/plain/*", "*/head/MatMul*"]
    spec = TfjsGraphExport(name="g", format="tfjs_graph",
                           quantize=Quantize(uint8=kernels, bias_correction=True, calibration_samples=20))
    result = tfjs_export.export_graph(ranged[0], spec, tmp_path, ctx)
    assert (result.details["bias_corrected"], result.details["bias_uncorrected"]) == (3, 1)
    values = _restored(tmp_path)
    k = keras()
    inputs = k.Model(model.input, [model.get_layer(name).input for name in ("conv", "dw", "head")]).predict(
        samples[:20], verbose=0)
    for layer, x in zip(("conv", "dw", "head"), inputs):
        original = model.get_layer(layer)
        kernel, bias = original.get_weights()
        delta = values[_kernel(values, layer)].astype(np.float64) - kernel
        probe = original.__class__.from_config({**original.get_config(), "activation": "linear", "name": "probe"})
        probe.build(x.shape)
        probe.set_weights([delta.astype(np.float32), np.zeros_like(bias)])
        shift = np.asarray(probe(x)).reshape(-1, bias.size).mean(axis=0)
        stored_bias = next(v for n, v in values.items() if f"/{layer}/" in n and v.ndim == 1)
        assert np.abs(shift).max() > 1e-3, layer  # the rounding does shift the channels: the test can fail
        assert np.abs((bias - stored_bias) - shift).max() <= 1e-3 * np.abs(shift).max(), layer


def test_bias_correction_needs_a_graph_model_and_calibration_data():
    from pydantic import ValidationError

    from converter.recipe.loader import load_recipe
    from converter.errors import RecipeErrors

    with pytest.raises(ValidationError, match="bias_correction"):
        TfjsLayersExport(name="l", format="tfjs_layers", quantize=Quantize(uint8=["*"], bias_correction=True))
    recipe = {"name": "r", "model": {"application": "MobileNet"},
              "exports": [{"name": "t", "format": "tfjs_graph", "quantize": {"uint8": ["*"], "bias_correction": True}}]}
    with pytest.raises(RecipeErrors, match=r"exports\.0\.quantize\.bias_correction.*calibration data"):
        load_recipe(recipe, check_files=False)
