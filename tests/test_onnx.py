"""ONNX exporter and onnxruntime adapter on tiny Keras models: options honoured, quantization real, parity kept."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BN_X, SATURATING_X, build_bn_net, build_flat_conv, build_saturating_conv
from conftest import FLAT_X as X

from converter.errors import ConversionError
from converter.exports.base import ExportContext
from converter.model_ref import ModelRef
from converter.recipe.schema import OnnxExport
from converter.runtimes.onnx_runtime import OnnxRuntime

CTX = ExportContext(build_id="t", calibration=lambda n: X[:n])


def _igamma(values):
    from converter.tf_env import tf

    return tf().math.igamma(values, values)


def _export(model: ModelRef, folder: Path, ctx: ExportContext = CTX, **options):
    from converter.exports.onnx import export

    return export(model, OnnxExport(name="t", format="onnx", **options), folder, ctx)


def _run(folder: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntime(folder, threads=1) as runtime:
        return runtime.run([x])[0]


def _graph(folder: Path):
    import onnx

    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def test_float_model_matches_keras(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert result.details["qdq_nodes"] == {"QuantizeLinear": 0, "DequantizeLinear": 0}
    with OnnxRuntime(tmp_path, threads=2) as runtime:
        np.testing.assert_allclose(runtime.run([X[:5]])[0], reference[:5], atol=1e-4)
        settings = runtime.describe()["settings"]
    assert settings["providers"] == ["CPUExecutionProvider"]
    assert settings["intra_op_num_threads"] == 2 and settings["graph_optimization_level"] == "ORT_ENABLE_ALL"


def test_opset_names_and_static_batch_are_honoured(conv, tmp_path):
    model, reference = conv
    _export(model, tmp_path, opset=13, input_names=["image"], output_names=["probs"], dynamic_batch=False)
    graph = _graph(tmp_path)
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == ["probs"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    np.testing.assert_allclose(_run(tmp_path, X[:1]), reference[:1], atol=1e-4)


def test_nchw_layout_and_dynamic_batch(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, layout="nchw")
    assert result.details["inputs"][0]["shape"] == ["batch", 3, 8, 8]
    assert result.details["outputs"][0]["shape"] == ["batch", 10]
    # the toolkit's samples are NHWC: the adapter transposes them for an input the model marks as NCHW
    np.testing.assert_allclose(_run(tmp_path, X[:3]), reference[:3], atol=1e-4)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta["convert.nchw_inputs"] == result.details["inputs"][0]["name"]


def test_external_data_always_writes_a_data_file(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, external_data="always")
    assert result.details["external_data"] is True and (tmp_path / "model.onnx.data").stat().st_size >= 5120 * 4
    np.testing.assert_allclose(_run(tmp_path, X[:2]), reference[:2], atol=1e-4)


def test_large_model_path_writes_tensors_outside_the_protobuf(conv, tmp_path, monkeypatch):
    import converter.exports.onnx as onnx_export

    model, reference = conv
    monkeypatch.setattr(onnx_export, "_PROTOBUF_LIMIT", 0)  # treat the tiny model as over 2 GB
    result = _export(model, tmp_path, external_data="auto")
    assert result.details["external_data"] is True
    np.testing.assert_allclose(_run(tmp_path, X[:2]), reference[:2], atol=1e-4)


def test_dynamic_int8_uses_integer_ops(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="dynamic_int8")
    ops = result.details["ops"]
    assert "DynamicQuantizeLinear" in ops and ("MatMulInteger" in ops or "ConvInteger" in ops)
    assert result.details["weight_dtypes"].get("int8", 0) >= 1
    assert np.abs(_run(tmp_path, X[:4]) - reference[:4]).max() < 0.05


def test_static_int8_is_qdq_and_exclude_op_types_keeps_matmul_float(conv, tmp_path):
    model, reference = conv
    result = _export(model, tmp_path, quantization="int8", calibration_method="minmax", exclude_op_types=["MatMul"],
                     layout="nchw")  # the NHWC calibration samples must be transposed too
    assert result.details["qdq_nodes"]["QuantizeLinear"] > 0 and result.details["qdq_nodes"]["DequantizeLinear"] > 0
    graph = _graph(tmp_path).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    conv_node = next(n for n in graph.node if n.op_type == "Conv")
    matmul = next(n for n in graph.node if n.op_type == "MatMul")
    assert produced_by.get(conv_node.input[1]) == "DequantizeLinear"  # int8 weights dequantized into the Conv
    float_weights = {t.name for t in graph.initializer if t.data_type == 1}
    assert matmul.input[1] in float_weights  # the excluded MatMul keeps its float32 weights
    assert not any(p.name.endswith(".onnx") and p.name != "model.onnx" for p in tmp_path.iterdir())
    assert np.abs(_run(tmp_path, X[:4]) - reference[:4]).max() < 0.05


def test_excluded_node_stays_float_under_default_session_options(tmp_path):
    """quantize_static leaves an excluded Conv reading a DequantizeLinear, and onnxruntime's WeightBiasQuantization
    (on by default) then gives its float weights int8 QDQ and runs it as a QLinearConv. The exported graph must
    feed it no DequantizeLinear, and onnxruntime at its default options must compute it in float."""
    import onnxruntime as ort

    build_bn_net().save(str(tmp_path / "bn"))
    model = ModelRef(tmp_path / "bn", "keras")
    _export(model, tmp_path / "float")
    name = [n.name for n in _graph(tmp_path / "float").graph.node if n.op_type == "Conv"][1]  # between two quantized
    calibrated = ExportContext(build_id="t", calibration=lambda n: BN_X[:n])
    result = _export(model, tmp_path / "int8", calibrated, quantization="int8", calibration_samples=8,
                     exclude_nodes=[name])
    assert result.details["float_nodes"] == [name]
    graph = _graph(tmp_path / "int8").graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    excluded = next(n for n in graph.node if n.name == name)
    assert all(produced_by.get(tensor) != "DequantizeLinear" for tensor in excluded.input), list(excluded.input)
    assert excluded.input[1] in {t.name for t in graph.initializer if t.data_type == 1}  # float32 weights

    # the optimized graph onnxruntime runs at its default level: the excluded Conv is the one float convolution
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "int8" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in _graph_at(tmp_path / "optimized.onnx").node]
    assert ops.count("QLinearConv") == 3 and "Conv" in ops, ops
    # and it computes in float: its output, read at the default level, is the float convolution of its input
    inputs, output = _run_reading(tmp_path / "int8" / "model.onnx", BN_X, [excluded.input[0], excluded.output[0]])
    expected = _run_node(excluded, graph, inputs)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def _run_reading(path: Path, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Run the model at onnxruntime's default options, returning the tensors `names` (made graph outputs)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: x})


def _run_node(node, graph, x: np.ndarray) -> np.ndarray:
    """The node alone, on x, with the graph's initializers, in onnxruntime without optimizations (float)."""
    import onnx
    import onnxruntime as ort

    constants = [t for t in graph.initializer if t.name in node.input[1:]]
    single = onnx.helper.make_graph([node], "node", [onnx.helper.make_tensor_value_info(node.input[0], 1, None)],
                                    [onnx.helper.make_tensor_value_info(node.output[0], 1, None)], constants)
    model = onnx.helper.make_model(single, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {node.input[0]: x})[0]


def _graph_at(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def test_unknown_exclude_op_type_is_refused(conv, tmp_path):
    model, _ = conv
    with pytest.raises(ConversionError, match="exclude_op_types: the model has no 'Conx' node.*did you mean 'Conv'"):
        _export(model, tmp_path, quantization="dynamic_int8", exclude_op_types=["Conx"])


def test_unsupported_op_is_named(tmp_path):
    from converter.tf_env import keras

    k = keras()
    k.Sequential([k.Input((4,)), k.layers.Lambda(_igamma)]).save(str(tmp_path / "igamma"))
    with pytest.raises(ConversionError, match="no ONNX conversion for Igamma"):
        _export(ModelRef(tmp_path / "igamma", "keras"), tmp_path / "out")


def test_exact_gelu_converts_through_erf(tmp_path):
    """Activation('gelu') is 0.5 x erfc(-x / sqrt 2); tf2onnx has no Erfc, ONNX has Erf (converter/exports/onnx_ops.py)."""
    from converter.tf_env import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((4,)), k.layers.Dense(16), k.layers.Activation("gelu")])
    model.save(str(tmp_path / "gelu"))
    x = np.random.default_rng(0).normal(0, 3, size=(8, 4)).astype(np.float32)
    _export(ModelRef(tmp_path / "gelu", "keras"), tmp_path / "out")
    assert {"Erf", "Sub"} <= {node.op_type for node in _graph(tmp_path / "out").graph.node}
    np.testing.assert_allclose(_run(tmp_path / "out", x), model.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


def test_opset_beyond_tf2onnx_is_refused_at_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="less than or equal to 18"):
        OnnxExport(name="t", format="onnx", opset=19)


def test_qat_model_fake_quant_becomes_qdq(tmp_path):
    from converter.tf_env import keras, tf, tfmot

    qat = tfmot().quantization.keras.quantize_model(build_flat_conv())
    qat.save(str(tmp_path / "untrained"))
    with pytest.raises(ConversionError, match="FakeQuantWithMinMaxVars node .*min == max"):
        _export(ModelRef(tmp_path / "untrained", "keras"), tmp_path / "refused")
    qat.compile("sgd", "sparse_categorical_crossentropy")
    keras().utils.set_random_seed(0)
    qat.fit(X, np.arange(16) % 10, epochs=1, verbose=0)  # sets the activation ranges (min == max until trained)
    qat.save(str(tmp_path / "qat"))
    result = _export(ModelRef(tmp_path / "qat", "keras"), tmp_path / "out")
    assert result.details["qat"] is True and result.details["qat_uint8_weights"] == 2
    graph = _graph(tmp_path / "out").graph
    # the activations' QDQ pairs are the QAT model's fake-quant grids: scale (max - min) / 255 of each learned range
    ranges = {v.name.split(":")[0]: float(v.numpy()) for v in qat.variables if v.shape.rank == 0}
    learned = {(ranges[f"{layer}_max"] - ranges[f"{layer}_min"]) / 255 for layer in
               ("quantize_layer/quantize_layer", "quant_conv2d/post_activation", "quant_dense/pre_activation")}
    exported = {float(_initializer(graph, node.input[1])) for node in graph.node if node.op_type == "QuantizeLinear"}
    assert len(exported) == len(learned) and all(min(abs(e / l - 1) for e in exported) < 1e-5 for l in learned)
    # the weights are uint8 behind a DequantizeLinear, and dequantize to the QAT model's fake-quantized kernels
    conv, dense = (qat.get_layer(name) for name in ("quant_conv2d", "quant_dense"))
    trained = {"Conv": tf().quantization.fake_quant_with_min_max_vars_per_channel(
                   _variable(conv, "kernel"), _variable(conv, "kernel_min"), _variable(conv, "kernel_max"), narrow_range=True
               ).numpy().transpose(3, 2, 0, 1),
               "MatMul": tf().quantization.fake_quant_with_min_max_vars(
                   _variable(dense, "kernel"), _variable(dense, "kernel_min"), _variable(dense, "kernel_max"), narrow_range=True
               ).numpy()}
    for op, expected in trained.items():
        node = next(n for n in graph.node if n.op_type == op)
        dequantize = next(n for n in graph.node if n.output[0] == node.input[1])
        quantized, scale, zero_point = (_initializer(graph, name) for name in dequantize.input)
        assert quantized.dtype == np.uint8 and np.all(zero_point == 128)
        shape = [-1] + [1] * (quantized.ndim - 1) if op == "Conv" else [1, -1] if scale.size > 1 else []
        np.testing.assert_allclose((quantized.astype(np.float32) - 128) * scale.reshape(shape), expected, rtol=1e-6, atol=1e-7)
    # onnxruntime computes the QAT model's function on every CPU: the logits (log-probabilities up to a constant
    # per sample) agree with TensorFlow's to one logit step, the most that a value on a rounding boundary can move
    # (TensorFlow rounds ties up and onnxruntime to even, and they sum in different orders)
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    logits_dq = next(node for node in graph.node if node.output[0] == softmax.input[0])
    step = float(_initializer(graph, logits_dq.input[1]))
    expected = qat.predict(X, verbose=0)
    for outputs in (_run(tmp_path / "out", X), _run_without_vnni(tmp_path / "out" / "model.onnx", X, tmp_path)):
        assert _logit_steps(outputs, expected, step) <= 1.001


def _variable(layer, name: str):
    """A QAT layer's variable by its last name part: 'kernel', 'kernel_min', 'kernel_max'."""
    return next(v for v in layer.weights if v.name.split("/")[-1].split(":")[0] == name)


def _logit_steps(probabilities: np.ndarray, expected: np.ndarray, step: float) -> float:
    """Largest difference, in logit quantization steps, between the logits behind two softmax outputs."""
    difference = np.log(probabilities) - np.log(expected)
    return float(np.abs(difference - np.median(difference, axis=1, keepdims=True)).max() / step)


def _initializer(graph, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(next(t for t in graph.initializer if t.name == name))


def _output_step(graph) -> float:
    """Quantization step of the graph's (first) output: the scale of the DequantizeLinear that produces it."""
    producer = {out: node for node in graph.node for out in node.output}
    node = producer[graph.output[0].name]
    while node.op_type != "DequantizeLinear":
        node = producer[node.input[0]]
    return float(_initializer(graph, node.input[1]))


def test_batchnorm_left_by_tf2onnx_is_folded_before_quantizing(tmp_path):
    # On 1x1 maps tf2onnx leaves a no-op Reshape between Conv and BatchNormalization and does not fold the
    # BatchNormalization (MobileNetV2 at 32x32 kept 12). Quantized, its input is the convolution's raw output,
    # whose channels span two decades, quantized with one scale: the small channels lose their precision and
    # the normalization then amplifies the error (measured: 4.8 output steps on average, 83 at most).
    model = build_bn_net()
    reference = model.predict(BN_X, verbose=0)
    model.save(str(tmp_path / "bn"))
    source = ModelRef(tmp_path / "bn", "keras")
    result = _export(source, tmp_path / "float")
    ops = result.details["ops"]
    assert "BatchNormalization" not in ops and ops["Reshape"] == 1  # the Flatten; the no-op Reshapes are gone
    assert result.details["folded_batchnorms"] == 2  # those on the 1x1 maps; tf2onnx folded the two on 4x4 maps
    np.testing.assert_allclose(_run(tmp_path / "float", BN_X), reference, atol=1e-4)
    calibrated = ExportContext(build_id="t", calibration=lambda n: BN_X[:n])
    quantized = _export(source, tmp_path / "int8", calibrated, quantization="int8", calibration_samples=32)
    assert "BatchNormalization" not in quantized.details["ops"]
    # Calibrated on these very inputs, every quantized tensor is within its range and only rounds: each of the
    # 5 roundings (input, 3 hidden activations, output) adds uniform noise of half a step of a tensor that
    # the normalizations keep at the output's scale, so |error| averages about sqrt(5/12) * 0.8 = 0.5 output
    # step (measured 0.5); the bound is one step
    error = np.abs(_run(tmp_path / "int8", BN_X) - reference) / _output_step(_graph(tmp_path / "int8").graph)
    assert error.mean() <= 1.0


_NO_VNNI_RUNNER = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], session.run(None, {session.get_inputs()[0].name: np.load(sys.argv[2])})[0])
"""


def _cpu_has_vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni"))


def _run_without_vnni(model: Path, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """Run `model` in onnxruntime on an x86 CPU without VNNI: this one, or an emulated Haswell (AVX2) under
    qemu-user when this CPU has VNNI; skip when neither is at hand."""
    command = [sys.executable, "-c", _NO_VNNI_RUNNER]
    if _cpu_has_vnni():
        if shutil.which("qemu-x86_64") is None:
            pytest.skip("this CPU has VNNI and qemu-x86_64 (Debian: qemu-user) is not installed to emulate one without")
        command = ["qemu-x86_64", "-cpu", "Haswell", *command]
    np.save(tmp_path / "x.npy", x)
    subprocess.run([*command, str(model), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True,
                   capture_output=True, timeout=300)
    return np.load(tmp_path / "y.npy")


def test_static_int8_does_not_saturate_on_cpus_without_vnni(tmp_path):
    # onnxruntime runs 8-bit convolutions on x86 with uint8 activations; with int8 weights (U8S8) its kernels
    # for CPUs without VNNI add pairs of u8*s8 products in saturating int16: 255*127*2 does not fit. This
    # model's products are all positive and large; with int8 weights it measured 1.6 off (26 output steps)
    # there and 0.03 on a VNNI CPU.
    model = build_saturating_conv()
    reference = model.predict(SATURATING_X, verbose=0)
    model.save(str(tmp_path / "sat"))
    calibrated = ExportContext(build_id="t", calibration=lambda n: SATURATING_X[:n])
    result = _export(ModelRef(tmp_path / "sat", "keras"), tmp_path / "q", calibrated, quantization="int8",
                     calibration_samples=8)
    assert result.details["weight_type"] == "uint8" and result.details["activation_type"] == "uint8"
    # Worst case of the one convolution y = w.x: the output rounds by half its step; the inputs by half the
    # input step (times the quantized weights); the weights by half their channel's step (times the inputs, <= 1)
    graph = _graph(tmp_path / "q").graph
    producer = {out: node for node in graph.node for out in node.output}
    conv = next(node for node in graph.node if node.op_type == "Conv")
    input_step, weight_steps = (_initializer(graph, producer[name].input[1]) for name in conv.input[:2])
    weights = np.abs(model.get_weights()[0].reshape(16, 8))
    bound = (_output_step(graph) / 2 + ((weights + weight_steps / 2) * input_step / 2).sum(0)
             + weight_steps / 2 * 16 * (1 + input_step / 2))
    for outputs in (_run(tmp_path / "q", SATURATING_X), _run_without_vnni(tmp_path / "q" / "model.onnx", SATURATING_X, tmp_path)):
        error = np.abs(outputs - reference).reshape(len(SATURATING_X), 16, 8).max(axis=(0, 1))
        assert np.all(error <= bound), (error, bound)


def test_fold_keeps_what_it_cannot_fold_and_the_outputs(tmp_path):
    """fold_batchnorm on a hand-made graph: Conv -> no-op Reshape -> BN is folded; a BN after a Conv whose
    output is also read elsewhere, and a Reshape that changes the shape, stay; the outputs do not change."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converter.exports.onnx_fold import fold_batchnorm, tensor_shapes

    rng = np.random.default_rng(0)

    def const(name, *shape, low=-1.0):
        return numpy_helper.from_array(rng.uniform(low, 1.0, shape).astype(np.float32), name)

    stats = lambda p: [const(f"{p}_gamma", 4), const(f"{p}_beta", 4), const(f"{p}_mean", 4), const(f"{p}_var", 4, low=0.01)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("Reshape", ["c1", "same"], ["r1"]),  # [N,4,1,1] -> [-1,4,1,1]: a no-op
        helper.make_node("BatchNormalization", ["r1", "a_gamma", "a_beta", "a_mean", "a_var"], ["b1"]),
        helper.make_node("Conv", ["b1", "w2"], ["c2"]),
        helper.make_node("BatchNormalization", ["c2", "b_gamma", "b_beta", "b_mean", "b_var"], ["b2"]),
        helper.make_node("Add", ["b2", "c2"], ["sum"]),  # c2 is read twice: its BN cannot be folded
        helper.make_node("Reshape", ["sum", "flat"], ["y"]),  # [N,4,1,1] -> [-1,4]: a real reshape
    ]
    initializers = [const("w1", 4, 3, 2, 2), const("w2", 4, 4, 1, 1), *stats("a"), *stats("b"),
                    numpy_helper.from_array(np.array([-1, 4, 1, 1], np.int64), "same"),
                    numpy_helper.from_array(np.array([-1, 4], np.int64), "flat")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    before = _run(tmp_path / "m.onnx", x)
    done = fold_batchnorm(model, tensor_shapes(tmp_path / "m.onnx"))
    assert done == {"identity_reshapes": 1, "folded_batchnorms": 1}
    assert [n.op_type for n in model.graph.node] == ["Conv", "Conv", "BatchNormalization", "Add", "Reshape"]
    assert not {"same", "w1", "a_gamma", "a_var"} & {t.name for t in model.graph.initializer}
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "folded.onnx"))
    np.testing.assert_allclose(_run(tmp_path / "folded.onnx", x), before, rtol=1e-5, atol=1e-5)
