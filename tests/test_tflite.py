"""TFLite exporter and LiteRT runtime on tiny Keras models: every quantization mode really quantizes, and runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import FLAT_X as X
from conftest import build_flat_conv

from converter.errors import ConversionError
from converter.exports.base import ExportContext
from converter.exports.unsupported_ops import tflite_missing_ops
from converter.model_ref import ModelRef
from converter.recipe.schema import TFLiteExport
from converter.runtimes.tflite_runtime import TFLiteRuntime, dequantize, quantize

CTX = ExportContext(build_id="t", calibration=lambda n: X[:n])


def _inverse(values):
    from converter.tf_env import tf

    t = tf()
    return t.reshape(t.linalg.inv(t.reshape(values, (-1, 2, 2))), (-1, 4))


@pytest.fixture(scope="module")
def matrix_inverse(tmp_path_factory):
    """A Keras model with a MatrixInverse (no TFLite builtin kernel)."""
    from converter.tf_env import keras

    k = keras()
    model = k.Sequential([k.Input((4,)), k.layers.Lambda(_inverse)])
    folder = tmp_path_factory.mktemp("tflite") / "inverse"
    model.save(str(folder))
    return ModelRef(folder, "keras")


def _export(model: ModelRef, tmp_path: Path, **options):
    from converter.exports.tflite import export

    spec = TFLiteExport(name="t", format="tflite", **options)
    return export(model, spec, tmp_path, CTX)


def _run(folder: Path, x: np.ndarray) -> np.ndarray:
    with TFLiteRuntime(folder, threads=1) as runtime:
        return runtime.run([x])[0]


def _op_input_dtypes(folder: Path) -> dict[str, list[str]]:
    """op name -> dtypes of its non-empty inputs, for the first op of each name."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(folder / "model.tflite"),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    found: dict[str, list[str]] = {}
    for op in interpreter._get_ops_details():
        found.setdefault(op["op_name"], [np.dtype(t).name for t in op["operand_types"]])
    return found


def test_float_model_matches_keras_and_resizes_batches(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path)
    assert set(result.details["weight_dtypes"]) == {"float32", "int32"}  # int32: Flatten's shape constant
    with TFLiteRuntime(tmp_path, threads=2) as runtime:
        np.testing.assert_allclose(runtime.run([X[:5]])[0], reference[:5], atol=1e-4)
        np.testing.assert_allclose(runtime.run([X[5:7]])[0], reference[5:7], atol=1e-4)
        settings = runtime.describe()["settings"]
    assert settings["num_threads"] == 2 and settings["xnnpack"] is True


def test_float16_stores_float16_weights(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="float16")
    weights = result.details["weight_dtypes"]
    assert weights.get("float16", 0) >= 2 and "float32" not in weights
    np.testing.assert_allclose(_run(tmp_path, X[:4]), reference[:4], atol=2e-2)


def test_dynamic_int8_quantizes_the_large_kernel_only(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="dynamic_int8")
    assert result.details["weight_dtypes"].get("int8") == 1  # the Dense kernel; the 216-weight conv stays float
    assert result.details["inputs"][0]["dtype"] == "float32"
    assert np.abs(_run(tmp_path, X[:4]) - reference[:4]).max() < 0.05


def test_full_int8_with_int8_io_and_its_input_scaling(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="int8", input_type="int8", output_type="int8")
    details = result.details
    assert details["inputs"][0]["dtype"] == "int8" and details["outputs"][0]["dtype"] == "int8"
    assert details["weight_dtypes"].get("int8") == 2 and "float32" not in details["tensor_dtypes"]
    assert all(dtypes[0] == "int8" for dtypes in _op_input_dtypes(tmp_path).values())
    scale = details["inputs"][0]["scale"]
    assert scale == pytest.approx((X[:100].max() - X[:100].min()) / 255, rel=1e-3)  # calibrated on X's range
    out = _run(tmp_path, X[:4])  # float inputs are quantized by the adapter, int8 outputs dequantized
    assert np.abs(out - reference[:4]).max() < 0.05


def test_quantize_and_dequantize_match_hand_computed_values():
    q = quantize(np.array([0.5, -1.0, 0.125, -0.125, 100.0, -100.0]), scale=0.25, zero_point=3, dtype=np.int8)
    np.testing.assert_array_equal(q, np.array([5, -1, 4, 2, 127, -128], dtype=np.int8))
    u = quantize(np.array([0.0, 1.0, -1.0]), scale=0.5, zero_point=128, dtype=np.uint8)
    np.testing.assert_array_equal(u, np.array([128, 130, 126], dtype=np.uint8))
    np.testing.assert_allclose(dequantize(np.array([5, -1], dtype=np.int8), 0.25, 3), [0.5, -1.0])


def test_int16x8_has_int16_activations(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="int16x8")
    assert result.details["tensor_dtypes"].get("int16", 0) >= 3
    assert result.details["weight_dtypes"].get("int8") == 2
    assert _op_input_dtypes(tmp_path)["CONV_2D"][:2] == ["int16", "int8"]
    assert np.abs(_run(tmp_path, X[:4]) - reference[:4]).max() < 0.01


def test_per_channel_off_gives_one_scale_per_kernel(conv, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, _ = conv
    scales = {}
    for per_channel in (True, False):
        folder = tmp_path / str(per_channel)
        _export(model, folder, quantization="int8", per_channel=per_channel)
        interpreter = Interpreter(model_path=str(folder / "model.tflite"))
        conv_op = next(op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D")
        kernel = interpreter._get_tensor_details(conv_op["inputs"][1], 0)
        scales[per_channel] = len(kernel["quantization_parameters"]["scales"])
    assert scales == {True: 8, False: 1}


def test_keep_float_ops_leaves_the_denied_op_float(conv, tmp_path):
    model, reference = conv
    _export(model, tmp_path, quantization="int8", keep_float_ops=["fully_connected"])
    dtypes = _op_input_dtypes(tmp_path)
    assert dtypes["FULLY_CONNECTED"][:2] == ["float32", "float32"]
    assert dtypes["CONV_2D"][:2] == ["int8", "int8"]
    assert np.abs(_run(tmp_path, X[:4]) - reference[:4]).max() < 0.05


def test_keep_float_nodes_leaves_the_denied_node_float(conv, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, _ = conv
    _export(model, tmp_path / "float")
    interpreter = Interpreter(model_path=str(tmp_path / "float" / "model.tflite"))
    dense = next(op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED")
    node = interpreter._get_tensor_details(dense["outputs"][0], 0)["name"]
    _export(model, tmp_path / "int8", quantization="int8", keep_float_nodes=[node])
    dtypes = _op_input_dtypes(tmp_path / "int8")
    assert dtypes["FULLY_CONNECTED"][:2] == ["float32", "float32"] and dtypes["CONV_2D"][:2] == ["int8", "int8"]


def test_keep_float_ops_naming_no_op_is_refused(conv, tmp_path):
    model, _ = conv
    with pytest.raises(ConversionError, match="no 'FULLY_CONECTED' op.*did you mean 'FULLY_CONNECTED'"):
        _export(model, tmp_path, quantization="int8", keep_float_ops=["FULLY_CONECTED"])


def test_missing_op_is_named_and_select_tf_ops_fixes_it(matrix_inverse, tmp_path):
    with pytest.raises(ConversionError, match="MatrixInverse.*select_tf_ops: true"):
        _export(matrix_inverse, tmp_path / "builtin")
    result = _export(matrix_inverse, tmp_path / "select", select_tf_ops=True)
    assert "FlexMatrixInverse" in result.details["ops"]


def test_converter_error_text_is_parsed():
    text = "error: ...\nTF Select ops: MatrixInverse, Cumprod\nDetails:\n...\nCustom ops: Erfc\n"
    missing = tflite_missing_ops(text)
    assert missing.select == ["Cumprod", "MatrixInverse"] and missing.custom == ["Erfc"]
    assert tflite_missing_ops("'tf.Igamma' op is neither a custom op nor a flex op").custom == ["Igamma"]


def test_qat_model_comes_out_int8(tmp_path):
    from converter.tf_env import keras, tfmot

    qat = tfmot().quantization.keras.quantize_model(build_flat_conv())
    qat.save(str(tmp_path / "qat"))
    result = _export(ModelRef(tmp_path / "qat", "keras"), tmp_path / "out", quantization="int8")
    assert result.details["qat"] is True
    assert result.details["weight_dtypes"].get("int8") == 2
    assert _op_input_dtypes(tmp_path / "out")["FULLY_CONNECTED"][:2] == ["int8", "int8"]
    assert np.abs(_run(tmp_path / "out", X[:4]) - qat.predict(X[:4], verbose=0)).max() < 0.05


def test_a_vanishing_output_quantizes_to_zeros_and_the_parity_failure_says_why(tmp_path):
    """Random-weight deep nets (the model zoo's MobileNetV2) give logits of ~1e-12: int8 cannot hold that range, the
    output is exactly 0 everywhere, and a bare 'cosine 0' would leave the user guessing."""
    from converter.evaluate import parity_verdict
    from converter.steps.check import parity_measurement
    from converter.tf_env import keras

    k = keras()
    model = k.Sequential([k.Input(X.shape[1:]), k.layers.Flatten(),
                          k.layers.Dense(3, kernel_initializer=k.initializers.RandomNormal(stddev=1e-13, seed=0))])
    model.save(str(tmp_path / "m"))
    source = model.predict(X[:16], verbose=0)
    _export(ModelRef(tmp_path / "m", "keras"), tmp_path / "out", quantization="int8")
    output = _run(tmp_path / "out", X[:16])
    assert 0 < np.abs(source).max() < 1e-9 and not output.any()
    _, failures = parity_verdict(parity_measurement({"y": output}, {"y": source}, "tflite"), "tflite", "int8", "t")
    assert [f.metric for f in failures] == ["cosine"]
    assert "every output is exactly 0, while the source's outputs reach only" in str(failures[0])
