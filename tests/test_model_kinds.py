"""Models with the shapes real projects have, and the repairs the toolkit makes for them: each repair is shown
to be needed (the artifact fails without it) and to work (it runs and matches its source afterwards)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import converter.tf_env  # noqa: F401  (legacy Keras before TensorFlow loads)
from converter import api
from converter.errors import ConversionError, DataError, ModelError, UserError
from converter.exports import tfjs as tfjs_export
from converter.exports.base import ExportContext
from converter.formats import open_runtime, tolerance
from converter.model_ref import ModelRef
from converter.recipe.schema import TFLiteExport, TfjsGraphExport, TfjsLayersExport

CTX = ExportContext()


def _save(model, folder: Path) -> ModelRef:
    model.save(str(folder), save_format="tf")
    return ModelRef(folder, "keras")


def _keras():
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    return k


def _run(folder: Path, fmt: str, backend: str, x: np.ndarray) -> np.ndarray:
    with open_runtime(backend, fmt, folder) as runtime:
        return runtime.run([x])[0]


# ----------------------------------------------------------------------------- TF.js graph on wasm
@pytest.fixture(scope="module")
def hard_sigmoid(tmp_path_factory):
    """Conv2D, then `+ 3.0` (MobileNetV3's hard-sigmoid): the converter fuses the scalar into the convolution."""
    k = _keras()
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = k.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    model = k.Model(inputs, k.layers.Flatten()(x))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("hs") / "m"), x, model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    """Two 1x1 convolutions added (ResNetV2's shortcut + block): the converter fuses the Add into one convolution
    with the other's output as its 'bias', a rank-4 tensor."""
    k = _keras()
    inputs = k.Input((8, 8, 3))
    shortcut = k.layers.Conv2D(4, 1, use_bias=False, name="shortcut")(inputs)
    block = k.layers.Conv2D(4, 1, use_bias=False, name="block")(k.layers.ReLU()(inputs))
    model = k.Model(inputs, k.layers.Flatten()(k.layers.Add(name="out")([shortcut, block])))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("res") / "m"), x, model.predict(x, verbose=0)


BIAS_CASES = {"hard_sigmoid": "unfused into Conv2D + AddV2 + Relu6", "residual": "as its bias (a residual add)"}


@pytest.mark.parametrize("case", list(BIAS_CASES))
def test_a_bias_that_is_not_one_per_channel_runs_on_wasm(case, request, tmp_path):
    model, x, expected = request.getfixturevalue(case)
    result = tfjs_export.export_graph(model, TfjsGraphExport(name="g", format="tfjs_graph"), tmp_path, CTX)
    assert any(BIAS_CASES[case] in note for note in result.notes), result.notes
    out = _run(tmp_path, "tfjs_graph", "tfjs-wasm", x)
    assert np.abs(out - expected).max() <= tolerance("tfjs_graph", "none").max_abs_diff


@pytest.mark.parametrize("case", list(BIAS_CASES))
def test_without_unfusing_wasm_refuses_the_bias(case, request, tmp_path, monkeypatch):
    model, x, _ = request.getfixturevalue(case)
    monkeypatch.setattr(tfjs_export, "repair_graph", lambda path: [])
    tfjs_export.export_graph(model, TfjsGraphExport(name="g", format="tfjs_graph"), tmp_path, CTX)
    with pytest.raises(ConversionError, match="rank-1 bias"):
        _run(tmp_path, "tfjs_graph", "tfjs-wasm", x)


# ----------------------------------------------------------------------------- grouped convolutions
@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """ConvNeXt's depthwise convolution written as Conv2D(groups = input channels), with a depth multiplier of 2,
    then a real grouped convolution (two channels per group, as RegNet's), optionally."""
    def build(real_group: bool):
        k = _keras()
        inputs = k.Input((8, 8, 4))
        x = k.layers.Conv2D(8, 3, padding="same", groups=4, activation="relu", name="dw_as_groups")(inputs)
        if real_group:
            x = k.layers.Conv2D(4, 1, groups=2, name="real_groups")(x)
        model = k.Model(inputs, k.layers.GlobalAveragePooling2D()(x))
        x = np.random.default_rng(0).normal(size=(3, 8, 8, 4)).astype(np.float32)
        return _save(model, tmp_path_factory.mktemp("grouped") / "m"), x, model.predict(x, verbose=0)
    return build


@pytest.mark.parametrize("fmt, backend", [("onnx", "onnxruntime"), ("tfjs_graph", "tfjs-wasm"),
                                          ("tfjs_layers", "tfjs-cpu")])
def test_a_grouped_convolution_with_one_channel_per_group_is_rebuilt_as_depthwise(grouped, fmt, backend, tmp_path):
    from pydantic import TypeAdapter

    from converter.exports.grouped import as_depthwise
    from converter.formats import exporter
    from converter.recipe.schema import Export

    model, x, expected = grouped(False)
    spec = TypeAdapter(Export).validate_python({"name": "e", "format": fmt})
    with as_depthwise(model) as (rebuilt, notes):
        exporter(fmt)(rebuilt, spec, tmp_path, CTX)
    assert rebuilt is not model and "repaired 1 grouped convolution(s)" in notes[0] and "'dw_as_groups'" in notes[0]
    out = _run(tmp_path, fmt, backend, x)
    assert np.abs(out - expected).max() <= tolerance(fmt, "none").max_abs_diff * max(1, np.abs(expected).max())


def test_several_channels_per_group_are_not_rebuilt_and_the_export_names_them(grouped, tmp_path):
    from converter.exports.grouped import as_depthwise, depthwise_layers

    model, _, _ = grouped(True)
    assert depthwise_layers(model.load_keras()) == ["dw_as_groups"]
    with as_depthwise(model) as (rebuilt, _):
        with pytest.raises(ConversionError, match="'real_groups' groups=2"):
            tfjs_export.export_layers(rebuilt, TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path, CTX)


# ----------------------------------------------------------------------------- TF.js layers topology gaps
def _separable(k):
    inputs = k.Input((8, 8, 3))
    x = k.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    return k.Model(inputs, k.layers.GlobalAveragePooling2D()(x))


def _scalar_lambda(k):
    inputs = k.Input((6,))
    x = k.layers.Dense(4, name="dense")(inputs)
    return k.Model(inputs, (x + 3.0) * 0.5 - 1.0)


def _normalization(k, axis=-1, given=False):
    inputs = k.Input((8, 8, 3))
    if given:  # EfficientNetV2's: the statistics are constructor arguments, in the config, not weights
        norm = k.layers.Normalization(axis=axis, mean=[0.5, 2.0, -1.0], variance=[4.0, 9.0, 0.25], name="norm")
    else:
        norm = k.layers.Normalization(axis=axis, name="norm")
        norm.adapt(np.random.default_rng(1).normal(2.0, 3.0, size=(32, 8, 8, 3)).astype(np.float32))
    x = k.layers.Conv2D(4, 3, name="conv")(norm(inputs))
    return k.Model(inputs, k.layers.GlobalAveragePooling2D()(x))


LAYERS_CASES = {  # construct -> (model builder, TF.js's refusal without the repair, the repair's note)
    "SeparableConv2D": (_separable, "Fields kernelInitializer", "repaired SeparableConv2D 'sep'"),
    "TFOpLambda": (_scalar_lambda, "Unknown layer: TFOpLambda", "Rescaling(scale=1, offset=3)"),
    "Normalization": (_normalization, "Unknown layer: Normalization", "repaired Normalization 'norm'"),
    # EfficientNet's: the channel axis written as a number
    "Normalization-axis-3": (lambda k: _normalization(k, axis=3), "Unknown layer: Normalization",
                             "repaired Normalization 'norm'"),
    "Normalization-given": (lambda k: _normalization(k, axis=3, given=True), "Unknown layer: Normalization",
                            "repaired Normalization 'norm'"),
}


@pytest.fixture(scope="module", params=list(LAYERS_CASES))
def layers_case(request, tmp_path_factory):
    build, refusal, note = LAYERS_CASES[request.param]
    model = build(_keras())
    shape = (3, *model.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(2.0, 3.0, size=shape).astype(np.float32)
    return _save(model, tmp_path_factory.mktemp("layers") / "m"), x, model.predict(x, verbose=0), refusal, note


@pytest.mark.parametrize("backend", ["tfjs-cpu", "tfjs-wasm"])
def test_layers_gap_is_repaired_and_matches_keras(layers_case, backend, tmp_path):
    model, x, expected, _, note = layers_case
    result = tfjs_export.export_layers(model, TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path, CTX)
    assert any(note in n for n in result.notes), result.notes
    out = _run(tmp_path, "tfjs_layers", backend, x)
    assert np.abs(out - expected).max() <= tolerance("tfjs_layers", "none").max_abs_diff * max(1, np.abs(expected).max())


def test_layers_gap_fails_without_its_repair(layers_case, tmp_path, monkeypatch):
    model, x, _, refusal, _ = layers_case
    monkeypatch.setattr(tfjs_export, "repair_layers", lambda topology, weights: [])
    tfjs_export.export_layers(model, TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path, CTX)
    with pytest.raises(ConversionError, match=refusal) as raised:
        _run(tmp_path, "tfjs_layers", "tfjs-cpu", x)
    assert "tfjs_graph" in str(raised.value)  # the refusal says what works instead


def test_grouped_convolution_is_refused_for_layers_with_the_change_to_make(tmp_path):
    """ConvNeXt and RegNet: Conv2D(groups=N) has no tfjs-layers layer nor TF.js kernel."""
    k = _keras()
    inputs = k.Input((8, 8, 4))
    x = k.layers.Conv2D(4, 3, groups=2, name="grouped")(inputs)
    model = _save(k.Model(inputs, k.layers.GlobalAveragePooling2D()(x)), tmp_path / "m")
    with pytest.raises(ConversionError, match=r"tfjs-layers has no grouped convolution \('grouped' groups=2\).*"
                                              r"export this model as tflite or onnx, or rebuild it with groups=1"):
        tfjs_export.export_layers(model, TfjsLayersExport(name="l", format="tfjs_layers"), tmp_path / "out", CTX)
    assert not (tmp_path / "out" / "model.json").exists()
    # the graph model and ONNX: tf_keras runs the layer as a PartitionedCall; the refusal names the layer first
    from converter.exports import onnx as onnx_export
    from converter.recipe.schema import OnnxExport

    with pytest.raises(ConversionError, match=r": grouped convolutions \('grouped' groups=2\) have no TF.js kernel"):
        tfjs_export.export_graph(model, TfjsGraphExport(name="g", format="tfjs_graph"), tmp_path / "graph", CTX)
    with pytest.raises(ConversionError, match=r"^grouped convolutions \('grouped' groups=2\) have no ONNX conversion.*"
                                              r"export this model as tflite, or rebuild it with groups=1"):
        onnx_export.export(model, OnnxExport(name="o", format="onnx"), tmp_path / "onnx", CTX)


# ----------------------------------------------------------------------------- sequence models in TFLite
@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """Token ids of any length -> Embedding -> LSTM -> 3 classes."""
    k = _keras()
    inputs = k.Input((None,), dtype="int32", name="ids")
    x = k.layers.Embedding(20, 8)(inputs)
    x = k.layers.LSTM(8)(x)
    model = k.Model(inputs, k.layers.Dense(3, activation="softmax")(x))
    ids = np.random.default_rng(0).integers(0, 20, size=(4, 6)).astype(np.int32)
    return _save(model, tmp_path_factory.mktemp("seq") / "m"), ids, model.predict(ids, verbose=0)


def test_lstm_tflite_error_names_select_tf_ops_and_the_cause(sequence, tmp_path):
    from converter.exports.tflite import export

    with pytest.raises(ConversionError) as raised:
        export(sequence[0], TFLiteExport(name="seq", format="tflite"), tmp_path, CTX)
    message = str(raised.value)
    assert "select_tf_ops: true on export 'seq'" in message
    assert "TensorList" in message and "element_shape" in message  # the cause, not the start of a location trace


def test_lstm_with_select_tf_ops_runs_in_tflite_with_the_flex_delegate(sequence, tmp_path):
    from converter.exports.tflite import export

    model, ids, expected = sequence
    export(model, TFLiteExport(name="seq", format="tflite", select_tf_ops=True), tmp_path, CTX)
    with open_runtime("tflite", "tflite", tmp_path) as runtime:
        out = runtime.run([ids])[0]
        described = runtime.describe()
    # LiteRT applies the Flex delegate when TensorFlow is loaded in the process (as here); a process without it
    # falls back to TensorFlow's build of the interpreter ("tensorflow.lite+flex")
    assert described["runtime"] in ("litert", "tensorflow.lite+flex")
    assert described["settings"]["flex_delegate"] is True and described["settings"]["flex_ops"] >= 1
    assert np.abs(out - expected).max() < 1e-5


# ----------------------------------------------------------------------------- recipes: shapes, dtypes, custom objects
def _recipe(model_path, **extra) -> dict:
    recipe = {"name": "kinds", "model": {"path": str(model_path)},
              "data": {"eval": {"source": "synthetic", "count": 8}},
              "exports": [{"name": "reference", "format": "savedmodel"}, {"name": "tflite", "format": "tflite"}],
              "verify": {"max_top1_drop": None}, "benchmark": {"enabled": False}}
    recipe.update(extra)
    return recipe


def test_synthetic_data_follows_an_integer_input(tmp_path):
    """Token ids: integers in int_range, never standard-normal floats (which an Embedding refuses when negative)."""
    k = _keras()
    inputs = k.Input((5,), dtype="int32", name="ids")
    x = k.layers.GlobalAveragePooling1D()(k.layers.Embedding(10, 4)(inputs))
    k.Model(inputs, k.layers.Dense(2)(x)).save(str(tmp_path / "m"), save_format="tf")
    report = api.run(_recipe(tmp_path / "m"), out=tmp_path / "run")
    assert report.passed, [a["failures"] for a in report.artifacts]
    from converter.data.loading import load_dataset
    from converter.recipe.schema import DatasetSpec

    data = load_dataset(DatasetSpec(source="synthetic", count=64), [{"name": "ids", "shape": [None, 5], "dtype": "int32"}])
    assert data.x.dtype == np.int32 and data.x.min() >= 0 and data.x.max() < 10


@pytest.fixture(scope="module")
def open_shape(tmp_path_factory):
    k = _keras()
    inputs = k.Input((None, None, 3))
    x = k.layers.Conv2D(4, 3)(inputs)
    folder = tmp_path_factory.mktemp("open") / "m"
    k.Model(inputs, k.layers.GlobalAveragePooling2D()(x)).save(str(folder), save_format="tf")
    return folder


def test_open_input_shape_without_a_declared_one_is_a_clear_error(open_shape, tmp_path):
    with pytest.raises(DataError, match=r"no fixed shape \(\['\?', '\?', 3\]\): declare one with model.input_shape"):
        api.run(_recipe(open_shape), out=tmp_path / "run")


def test_declared_input_shape_fixes_conversion_data_and_timing(open_shape, tmp_path):
    timing = {"enabled": True, "threads": [1], "warmup_runs": 1, "warmup_seconds": 0, "min_runs": 3, "min_seconds": 0,
              "backends": ["tflite"]}
    recipe = _recipe(open_shape, benchmark=timing)
    recipe["model"]["input_shape"] = [16, 16, 3]
    report = api.run(recipe, out=tmp_path / "run")
    assert report.passed, [a["failures"] for a in report.artifacts]
    tflite = report.artifact("tflite")
    assert tflite["details"]["inputs"][0]["shape"] == [-1, 16, 16, 3]
    assert tflite["latency"][0]["n"] >= 3


CUSTOM = '''
from converter.tf_env import keras

class Doubling(keras().layers.Layer):
    def call(self, inputs):
        return inputs * 2.0
'''


@pytest.fixture(scope="module")
def custom_h5(tmp_path_factory):
    import importlib.util

    folder = tmp_path_factory.mktemp("custom")
    (folder / "layers.py").write_text(CUSTOM)
    spec = importlib.util.spec_from_file_location("custom_layers_for_test", folder / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    k = _keras()
    inputs = k.Input((4,))
    k.Model(inputs, k.layers.Dense(2)(module.Doubling()(inputs))).save(str(folder / "model.h5"))
    return folder


def test_custom_layer_without_custom_objects_says_how_to_supply_them(custom_h5, tmp_path):
    with pytest.raises(ModelError, match="set model.custom_objects to a .py file"):
        api.run(_recipe(custom_h5 / "model.h5"), out=tmp_path / "run")


def test_custom_objects_file_loads_the_model(custom_h5, tmp_path):
    recipe = _recipe(custom_h5 / "model.h5")
    recipe["model"].update(custom_objects=str(custom_h5 / "layers.py"), trust_model_code=True)
    report = api.run(recipe, out=tmp_path / "run")
    assert report.passed, [a["failures"] for a in report.artifacts]


def test_custom_objects_need_trust(custom_h5, tmp_path):
    recipe = _recipe(custom_h5 / "model.h5")
    recipe["model"]["custom_objects"] = str(custom_h5 / "layers.py")
    with pytest.raises(UserError, match="trust_model_code"):
        api.run(recipe, out=tmp_path / "run")
