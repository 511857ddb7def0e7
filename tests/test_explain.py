"""Where the error starts (converter/explain/): the layer map, local against accumulated error, the ranking, the
suggestion, the run's hook, `convert explain` and the report section.

The seeded fault cases are tiny conv nets with set weights (no training). One chosen layer is made fragile the way
BN-folded MobileNet layers are: a channel that is dead in the float model (its ReLU never fires) feeds the layer
through a few weights far larger than the rest. The float model never sees them; the quantizer's range does, so
every other weight of that layer lands on a handful of levels. The layers after it inherit the error, so a map
that ranked by accumulated error, or matched the wrong tensors, would not put the fragile layer first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml


LAYERS = ("conv_a", "conv_b", "conv_c", "conv_d")
OUTLIER = 40.0  # the fragile weights, in multiples of the largest healthy weight of their layer


def fragile_net(fragile: str | None):
    """16x16x3 -> four 3x3 convs (ReLU) -> global pooling -> dense (linear scores), He-scaled weights from a seed.

    With `fragile` set, output channel 0 of the layer before it is dead (zero kernel, bias -1: its ReLU is always 0)
    and the fragile layer reads that channel through weights OUTLIER times its largest healthy weight."""
    from converter.tf_env import keras

    k = keras()
    inputs = k.Input((16, 16, 3), name="image")
    x = inputs
    for name, filters, stride in zip(LAYERS, (8, 8, 16, 16), (1, 1, 2, 1)):
        x = k.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu", name=name)(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    model = k.Model(inputs, k.layers.Dense(10, name="head")(x), name="net")
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            kernel = rng.normal(0, np.sqrt(2 / np.prod(kernel.shape[:-1])), kernel.shape).astype(np.float32)
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape).astype(np.float32)])
    if fragile:
        index = LAYERS.index(fragile)
        before = model.get_layer(LAYERS[index - 1])
        kernel, bias = before.get_weights()
        kernel[..., 0], bias[0] = 0.0, -1.0
        before.set_weights([kernel, bias])
        layer = model.get_layer(fragile)
        kernel, bias = layer.get_weights()
        kernel[1, 1, 0, :] = OUTLIER * np.abs(kernel).max() * np.where(np.arange(kernel.shape[-1]) % 2, 1, -1)
        layer.set_weights([kernel, bias])
    return model


def recipe(model_path: Path, export: dict, min_snr_db: float = 30.0) -> dict:
    data = {"source": "synthetic", "shape": [16, 16, 3], "count": 64, "seed": 3}
    return {"name": "fragile", "model": {"path": str(model_path)},
            "data": {"eval": data, "calibration": {**data, "seed": 4}},
            "exports": [{"name": "artifact", **export}],
            "verify": {"min_snr_db": min_snr_db, "parity_samples": 8}}


def run_recipe(tmp_path: Path, fragile: str | None, export: dict, min_snr_db: float = 30.0):
    from converter import api

    tmp_path.mkdir(parents=True, exist_ok=True)
    model_path = tmp_path / "net.h5"
    fragile_net(fragile).save(model_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(model_path, export, min_snr_db)))
    return api.run(path, out=tmp_path / "run", benchmark=False), path


FAULTS = [
    pytest.param("conv_b", {"format": "tfjs_graph", "quantize": {"uint8": ["*"]}, "backends": ["tfjs-cpu"]}, 30.0,
                 id="tfjs-uint8-conv_b"),
    pytest.param("conv_c", {"format": "tfjs_graph", "quantize": {"uint8": ["*"]}, "backends": ["tfjs-wasm"]}, 30.0,
                 id="tfjs-uint8-wasm-conv_c"),
    pytest.param("conv_c", {"format": "onnx", "quantization": "dynamic_int8"}, 30.0, id="onnx-dynamic-conv_c"),
    pytest.param("conv_b", {"format": "onnx", "quantization": "int8", "calibration_samples": 32}, 30.0,
                 id="onnx-int8-conv_b"),
    # full-integer TFLite quantizes every activation with one scale per tensor: the healthy net's output is at
    # about 26 dB without the fault, and its budget is 20 dB
    pytest.param("conv_d", {"format": "tflite", "quantization": "int8", "calibration_samples": 32}, 20.0,
                 id="tflite-int8-conv_d"),
]


@pytest.mark.parametrize("fragile,export,min_snr_db", FAULTS)
def test_seeded_fault_is_ranked_first(tmp_path, fragile, export, min_snr_db):
    healthy = run_recipe(tmp_path / "healthy", None, export, min_snr_db)[0]  # the budget is one the net can meet
    assert healthy.passed, healthy.artifact("artifact")["failures"]
    report, _ = run_recipe(tmp_path, fragile, export, min_snr_db)
    evaluation = report.artifact("artifact")["evaluations"][0]
    assert not evaluation["passed"], evaluation["metrics"]
    found = evaluation["explain"]
    assert "error" not in found, found
    assert found["ranking"][0] == fragile, (found["ranking"], found["verdict"])
    rows = {row["layer"]: row for row in found["layers"]}
    # every conv is matched to a tensor of its own, verified on activations
    assert set(LAYERS) <= set(rows), found["map"]
    assert not found["map"]["unmatched"], found["map"]["unmatched"]
    # the fragile layer creates the error; the ones after it inherit more than they add
    assert rows[fragile]["creates"] is True
    after = LAYERS[LAYERS.index(fragile) + 1:]
    assert all(rows[layer]["local"]["sqnr_db"] > rows[fragile]["local"]["sqnr_db"] for layer in after)
    # its weights: the largest is OUTLIER times the largest healthy one, itself above the median |w|
    assert rows[fragile]["weights"]["range_ratio"] >= OUTLIER
    # the verdict names that one layer, and its recipe change, applied, brings the artifact within budget
    assert found["suggested"] == [fragile], found["verdict"]
    repaired = run_recipe(tmp_path / "repaired", fragile, {**export, **found["suggestion"]["recipe"]}, min_snr_db)[0]
    assert repaired.passed, repaired.artifact("artifact")["failures"]


# ----------------------------------------------------------------------------- the map reports, never guesses
def test_layer_map_reports_a_misnamed_tensor_and_an_orphan_layer():
    """No TensorFlow: a source of five layers, an artifact whose tensor named after conv_b holds conv_c's values,
    and a layer (aux) no tensor speaks of. Both are reported as not matched, each with its reason."""
    from converter.explain import layermap
    from converter.explain.source import Source, SourceLayer
    from converter.runtimes.base import TensorInfo

    rng = np.random.default_rng(0)
    layers = [SourceLayer("conv_a", "Conv2D", ("",), ("conv_a",), 9), SourceLayer("conv_b", "Conv2D", ("conv_a",), ("conv_b",), 9),
              SourceLayer("conv_c", "Conv2D", ("conv_b",), ("conv_c",), 9), SourceLayer("aux", "Conv2D", ("conv_c",), ("aux",), 9),
              SourceLayer("head", "Dense", ("conv_c",), ("head",), 9)]
    activations = {layer.name: rng.normal(size=(4, 6, 6, 3) if layer.name != "head" else (4, 10)).astype(np.float32)
                   for layer in layers}
    tensors = [TensorInfo("image", "input"),
               TensorInfo("net/conv_a/Relu", "Relu", ("image",), ("net/conv_a/kernel",)),
               TensorInfo("net/conv_b/Relu", "Relu", ("net/conv_a/Relu",), ("net/conv_b/kernel",)),
               TensorInfo("net/conv_c/Relu", "Relu", ("net/conv_b/Relu",), ("net/conv_c/kernel",)),
               TensorInfo("net/head/BiasAdd", "BiasAdd", ("net/conv_c/Relu",), ("net/head/kernel",))]
    noise = lambda name: activations[name] + 0.01 * rng.normal(size=activations[name].shape).astype(np.float32)  # noqa: E731
    values = {"net/conv_a/Relu": noise("conv_a"), "net/conv_b/Relu": noise("conv_c"), "net/conv_c/Relu": noise("conv_c"),
              "net/head/BiasAdd": noise("head")}
    the_map = layermap.build(Source("keras", layers, ["head"]), activations, tensors, values)
    assert {layer: m.tensor for layer, m in the_map.matches.items()} == {
        "conv_a": "net/conv_a/Relu", "conv_c": "net/conv_c/Relu", "head": "net/head/BiasAdd"}
    assert set(the_map.unmatched) == {"conv_b", "aux"}, the_map.unmatched
    assert "closer to conv_c" in the_map.unmatched["conv_b"]
    assert the_map.unmatched["aux"] == "no tensor, node or weight of the artifact carries its name"
    assert the_map.to_json()["unmatched"][0]["layer"] == "conv_b"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,key", [
    (["--export", "nosuch"], "--export nosuch"),
    (["--export", "onnx-int8", "--backend", "nosuch"], "--backend nosuch"),
    (["--export", "onnx-int8", "--backend", "tfjs-cpu"], "--backend tfjs-cpu"),
    (["--export", "onnx-int8", "--against", "nosuch"], "--against nosuch"),
], ids=["export", "backend", "backend-of-another-format", "against"])
def test_explain_bad_input_is_one_error_line(args, key):
    from tests.conftest import ROOT, run_cli

    result = run_cli("explain", str(ROOT / "recipes" / "digits-h5.yaml"), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), result.stderr


def test_divergence_names_the_first_tensor_where_two_runs_part(tmp_path):
    """`--against`'s measure on two real TF.js runs of one graph whose only difference is conv_b's weights (uint8
    with the fragile outliers in one of them): the first tensor below DIVERGENCE_DB is conv_b's, every tensor before
    it is bit-identical, and the matched layers after it inherit the difference."""
    from types import SimpleNamespace

    from converter.exports.base import ExportContext
    from converter.exports.tfjs import export_graph
    from converter.explain.analysis import DIVERGENCE_DB, divergence, read
    from converter.formats import open_runtime
    from converter.model_ref import ModelRef
    from converter.recipe.schema import TfjsGraphExport

    fragile_net("conv_b").save(str(tmp_path / "savedmodel"), save_format="tf")
    ref, ctx = ModelRef(tmp_path / "savedmodel", "keras"), ExportContext(build_id="h", class_names=None)
    export_graph(ref, TfjsGraphExport(name="a", format="tfjs_graph"), tmp_path / "float", ctx)
    export_graph(ref, TfjsGraphExport(name="b", format="tfjs_graph", quantize={"uint8": ["*/conv_b/*"]}), tmp_path / "b", ctx)
    x = np.random.default_rng(3).uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    with open_runtime("tfjs-cpu", "tfjs_graph", tmp_path / "float") as one, \
            open_runtime("tfjs-cpu", "tfjs_graph", tmp_path / "b") as other:
        tensors = one.tensors()
        names = [t.name for t in tensors if t.op != "input"]
        values = read(one, x, names)
        conv_b = next(t.name for t in tensors if "/conv_b/" in t.name)
        found = divergence(one, other, tensors, values, x, SimpleNamespace(matches={}))
        first = found["first"]
        assert first["tensor"] == conv_b and first["sqnr_db"] < DIVERGENCE_DB, found
        theirs = read(other, x, names)
        before = names[:names.index(conv_b)]
        assert before and all(np.array_equal(values[n], theirs[n]) for n in before)
