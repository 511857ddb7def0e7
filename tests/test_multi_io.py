"""Models with several inputs and several outputs: data by input name, outputs matched by name, every output
checked and reported (report.json metrics.outputs, parity outputs), calibration and timing with every input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from converter import api, metrics
from converter.errors import DataError

OUTPUTS = ("alpha_box", "zeta_probs")  # sorted by name, the reverse of the Keras model's output order


def build_two_by_two():
    """image (8x8x3) + vec (4) -> zeta_probs (5 classes, softmax) and alpha_box (2 values, linear)."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    image, vec = k.Input((8, 8, 3), name="image"), k.Input((4,), name="vec")
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    h = k.layers.Concatenate(name="join")([x, k.layers.Dense(8, activation="relu", name="vec_dense")(vec)])
    probs = k.layers.Dense(5, activation="softmax", name="zeta_probs")(h)
    box = k.layers.Dense(2, name="alpha_box")(h)
    return k.Model([image, vec], [probs, box])


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """(Keras SavedModel folder, .npz with image, vec and labels of zeta_probs)."""
    folder = tmp_path_factory.mktemp("two_by_two")
    model = build_two_by_two()
    model.save(str(folder / "model"), save_format="tf")
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (48, 8, 8, 3)).astype(np.float32)
    vec = rng.normal(size=(48, 4)).astype(np.float32)
    labels = np.argmax(model.predict([image, vec], verbose=0)[0], axis=1)
    np.savez(folder / "data.npz", image=image, vec=vec, y=labels)
    return folder / "model", folder / "data.npz"


def recipe(model, data, exports, **extra) -> dict:
    spec = {"source": "arrays", "path": str(data), "x_keys": {"image": "image", "vec": "vec"}}
    result = {"name": "two-by-two", "model": {"path": str(model)}, "data": {"eval": spec, "calibration": spec},
              "exports": exports, "verify": {"primary_output": "zeta_probs"}, "benchmark": {"enabled": False}}
    result.update(extra)
    return result


TFJS = ["tfjs-cpu", "tfjs-wasm"]
EVERY_FORMAT = [
    {"name": "reference", "format": "savedmodel"},
    {"name": "tflite", "format": "tflite"},
    {"name": "tflite-int8", "format": "tflite", "quantization": "int8", "calibration_samples": 48,
     "verify": {"max_top1_drop": None}},
    {"name": "onnx", "format": "onnx"},
    {"name": "onnx-renamed", "format": "onnx", "input_names": ["in_a", "in_b"], "output_names": ["out_a", "out_b"]},
    {"name": "onnx-int8", "format": "onnx", "quantization": "int8", "calibration_samples": 48,
     "verify": {"max_top1_drop": None}},
    {"name": "tfjs-graph", "format": "tfjs_graph", "backends": TFJS},
    {"name": "tfjs-layers", "format": "tfjs_layers", "backends": TFJS},
]


def test_two_inputs_two_outputs_pass_every_format_with_per_output_metrics(two_by_two, tmp_path):
    model, data = two_by_two
    timing = {"enabled": True, "threads": [1], "warmup_runs": 1, "warmup_seconds": 0, "min_runs": 3,
              "min_seconds": 0, "max_seconds": 5, "backends": ["tflite", "onnxruntime", "tfjs-wasm"]}
    report = api.run(recipe(model, data, EVERY_FORMAT, benchmark=timing), out=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "report.json").read_text())
    failures = [f for a in written["artifacts"] for f in a["failures"]]
    assert report.passed, failures
    assert written["reference"]["primary_output"] == "zeta_probs"
    for artifact in written["artifacts"]:
        assert artifact["evaluations"], artifact["name"]
        for evaluation in artifact["evaluations"]:
            assert evaluation["primary_output"] == "zeta_probs"
            per_output = evaluation["metrics"]["outputs"]
            assert sorted(per_output) == list(OUTPUTS), artifact["name"]
            assert per_output["zeta_probs"]["top1"] == evaluation["metrics"]["top1"]
            assert "top1" not in per_output["alpha_box"] and per_output["alpha_box"]["cosine"] > 0.9
        for parity in artifact["parity"]:
            assert sorted(parity["outputs"]) == list(OUTPUTS) and parity["passed"], (artifact["name"], parity)
        for row in artifact["latency"]:
            assert "error" not in row and row["n"] >= 3, (artifact["name"], row)
    float_tflite = next(a for a in written["artifacts"] if a["name"] == "tflite")
    assert float_tflite["parity"][0]["outputs"]["alpha_box"]["max_abs_diff"] < 1e-4
    assert {r["backend"] for a in written["artifacts"] for r in a["latency"]} == {"tflite", "onnxruntime", "tfjs-wasm"}


def test_tflite_orders_outputs_its_own_way_and_the_runtime_names_them(two_by_two, tmp_path):
    """LiteRT lists this model's outputs in another order than the signature's names: by position, alpha_box would
    be compared with zeta_probs (the -0.31 cosine of the issue). The adapter names them; matching uses the names."""
    from converter.exports.base import ExportContext
    from converter.exports.tflite import export
    from converter.formats import open_runtime
    from converter.model_ref import ModelRef
    from converter.recipe.schema import TFLiteExport
    from converter.steps.outputs import run_outputs
    from converter.tf_env import keras

    model, data = two_by_two
    export(ModelRef(model, "keras"), TFLiteExport(name="t", format="tflite"), tmp_path, ExportContext())
    arrays = np.load(data)
    x = {"image": arrays["image"][:8], "vec": arrays["vec"][:8]}
    keras_model = keras().models.load_model(str(model), compile=False)
    expected = dict(zip(["zeta_probs", "alpha_box"], keras_model.predict([x["image"], x["vec"]], verbose=0)))
    with open_runtime("tflite", "tflite", tmp_path) as runtime:
        raw = [d["name"] for d in runtime._interpreter.get_output_details()]
        got = run_outputs(runtime, x, 8, {n: a.shape[1:] for n, a in expected.items()})
    assert raw != sorted(raw) or [d["name"] for d in runtime._interpreter.get_input_details()][0].endswith("vec:0")
    for name in OUTPUTS:
        assert np.abs(got[name] - expected[name]).max() < 1e-5


def test_an_output_zeroed_by_quantization_is_not_a_perfect_cosine():
    reference = np.random.default_rng(0).normal(size=(4, 3))
    assert metrics.reference_metrics(np.zeros_like(reference), reference)["cosine"] == 0.0
    assert metrics.reference_metrics(np.zeros((4, 3)), np.zeros((4, 3)))["cosine"] == 1.0


def test_labels_beyond_the_output_classes_are_a_data_error():
    with pytest.raises(DataError, match="class labels range 0..7, but the model's output has 5 classes"):
        metrics.label_metrics(np.ones((3, 5)), np.array([0, 7, 1]))
    with pytest.raises(DataError, match="cannot be targets"):
        metrics.label_metrics(np.ones((3, 2)), np.ones(3, dtype=np.float32))


def test_multi_input_data_without_x_keys_names_the_inputs(two_by_two, tmp_path):
    from converter.errors import UserError

    model, data = two_by_two
    single = {"source": "arrays", "path": str(data), "x_key": "image"}
    bad = recipe(model, data, [{"name": "reference", "format": "savedmodel"}])
    bad["data"] = {"eval": single}
    with pytest.raises(UserError, match=r"the model has 2 inputs \(image, vec\).*x_keys"):
        api.run(bad, out=tmp_path / "run")


def test_an_artifact_whose_source_names_its_output_unlike_the_reference(tmp_path):
    """A QAT branch's model names its output 'quant_<name>', the reference '<name>': evaluation matches the artifact
    to the reference, parity (on the same samples, reused) to its own source; neither is a KeyError."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((8, 8, 3))
    x = k.layers.Dense(8, activation="relu", name="hidden")(k.layers.Flatten(name="flat")(inputs))
    k.Model(inputs, k.layers.Dense(10, name="scores")(x)).save(str(tmp_path / "m"), save_format="tf")
    data = {"source": "digits", "split": "test", "limit": 32, "preprocess": {"scale": "1/16", "channels": "rgb"}}
    report = api.run({
        "name": "qat-branch", "model": {"path": str(tmp_path / "m")}, "data": {"train": data, "eval": data},
        "pipeline": [{"stage": "qat", "name": "qat", "input": "source", "epochs": 1}],
        "exports": [{"name": "tflite-qat", "format": "tflite", "model": "qat"}],
        "verify": {"max_top1_drop": None, "min_top1_agreement": None}, "benchmark": {"enabled": False}},
        out=tmp_path / "run")
    artifact = report.artifact("tflite-qat")
    assert [e["backend"] for e in artifact["evaluations"]] == ["tflite"], artifact
    assert artifact["parity"][0]["passed"], artifact["parity"]
    assert artifact["parity"][0]["samples"] == 16 and artifact["evaluations"][0]["samples"] == 32
