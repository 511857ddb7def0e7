"""TFLite export through tf.lite.TFLiteConverter, with every post-training quantization mode.

Modes: 'none', 'float16' (float16 weights), 'dynamic_int8' (int8 weights, float activations),
'int8' (full integer, calibrated), 'int16x8' (int16 activations, int8 weights, calibrated).
A quantization-aware-trained (tfmot) Keras model is converted from its Keras object with the
ranges learnt in training, as full int8.
Selective quantization (keep_float_ops / keep_float_nodes) uses the MLIR quantizer's deny-lists,
the mechanism behind tf.lite.experimental.QuantizationDebugger.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from converter.errors import ConversionError
from converter.exports.base import ExportContext, ExportResult
from converter.exports.unsupported_ops import tflite_missing_ops
from converter.model_ref import ModelRef
from converter.recipe.schema import CALIBRATED, TFLiteExport
from converter.suggest import did_you_mean

FILENAME = "model.tflite"
_QAT_CLASSES = (b"QuantizeWrapperV2", b"QuantizeWrapper", b"QuantizeLayer")


def export(model: ModelRef, spec: TFLiteExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Convert `model` to out_dir/model.tflite as `spec` asks; details describe the tensors written."""
    from converter.tf_env import tf

    tf()
    result = ExportResult()
    qat = is_qat_model(model)
    denylist = bool(spec.keep_float_ops or spec.keep_float_nodes) and not qat
    if denylist and spec.quantization != "int8":
        raise ConversionError(f"keep_float_ops/keep_float_nodes need quantization 'int8', not '{spec.quantization}': "
                              "TFLite's selective quantization works on int8 activations only")
    converter = _converter(model, spec)
    _configure(converter, spec, qat, ctx, result)
    try:
        content = _convert_selectively(converter, spec) if denylist else converter.convert()
    except ConversionError:
        raise
    except Exception as error:  # tf.lite's ConverterError, or a ValueError/RuntimeError from calibration
        raise _conversion_error(error, spec) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILENAME).write_bytes(content)
    result.details.update(describe_tflite(content))
    result.details.update(quantization=spec.quantization, qat=qat, per_channel=spec.per_channel,
                          select_tf_ops=spec.select_tf_ops, custom_ops=spec.custom_ops,
                          keep_float_ops=list(spec.keep_float_ops), keep_float_nodes=list(spec.keep_float_nodes))
    _note_unquantized(spec, qat, result)
    return result


def is_qat_model(model: ModelRef) -> bool:
    """True when `model` is a Keras model carrying tfmot quantize wrappers (quantization-aware trained)."""
    metadata = Path(model.path) / "keras_metadata.pb"
    if model.kind != "keras" or not metadata.is_file():
        return False
    content = metadata.read_bytes()
    return any(name in content for name in _QAT_CLASSES)


def _converter(model: ModelRef, spec: TFLiteExport):
    """From the SavedModel, QAT models included: their FakeQuant ops carry the trained ranges into the
    SavedModel graph, which converts to the same int8 model as from_keras_model, 2-3 times faster."""
    from converter.tf_env import tf

    lite = tf().lite
    try:
        return lite.TFLiteConverter.from_saved_model(str(model.path), signature_keys=[spec.signature])
    except ValueError as error:
        raise ConversionError(f"{model.path}: cannot convert signature '{spec.signature}': {_first_line(error)}") from None


def _configure(converter, spec: TFLiteExport, qat: bool, ctx: ExportContext, result: ExportResult) -> None:
    from converter.tf_env import tf

    lite = tf().lite
    ops: list[Any] = [lite.OpsSet.TFLITE_BUILTINS]
    mode = spec.quantization
    if qat:
        if mode != "int8":
            message = f"the model is quantization-aware trained: exported as int8 with its trained ranges, not '{mode}'"
            result.notes.append(message)
            ctx.warn(message)
        if spec.keep_float_ops or spec.keep_float_nodes:
            message = "keep_float_ops/keep_float_nodes do not apply to a quantization-aware trained model: ignored"
            result.notes.append(message)
            ctx.warn(message)
        converter.optimizations = [lite.Optimize.DEFAULT]
        mode = "int8_qat"
    elif mode == "float16":
        converter.optimizations = [lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf().float16]
    elif mode == "dynamic_int8":
        converter.optimizations = [lite.Optimize.DEFAULT]
    elif mode in CALIBRATED:
        converter.optimizations = [lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(ctx, spec.calibration_samples, mode)
        ops = [lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8"
               else lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if mode in ("int8", "int8_qat"):
        converter.inference_input_type = _tf_dtype(spec.input_type)
        converter.inference_output_type = _tf_dtype(spec.output_type)
    if not spec.per_channel:
        converter._experimental_disable_per_channel = True  # TF 2.19 name; no public option exists
    if spec.select_tf_ops:
        ops.append(lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    converter.allow_custom_ops = spec.custom_ops


def representative_dataset(ctx: ExportContext, count: int, mode: str) -> Callable[[], Iterator[Any]]:
    """The converter's representative dataset: one-sample batches of ctx.calibration(count); for several inputs,
    {signature input name: sample} dicts, which the converter matches to the signature's inputs by name."""
    from converter.data.dataset import count as samples_in

    if ctx.calibration is None:
        raise ConversionError(f"quantization '{mode}' needs calibration data: add data.calibration")
    samples = ctx.calibration(count)
    if isinstance(samples, dict):
        samples = {name: _float32(array) for name, array in samples.items()}
    else:
        samples = _float32(samples)
    if samples_in(samples) == 0:
        raise ConversionError(f"quantization '{mode}': the calibration data is empty")

    def generate() -> Iterator[Any]:
        for index in range(samples_in(samples)):
            if isinstance(samples, dict):
                yield {name: array[index:index + 1] for name, array in samples.items()}
            else:
                yield [samples[index:index + 1]]

    return generate


def _float32(array) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _convert_selectively(converter, spec: TFLiteExport) -> bytes:
    """Calibrate, then quantize to int8 with the deny-lists (ops and nodes kept float).

    This is what QuantizationDebugger.get_nondebug_quantized_model does; called directly so that
    input_type/output_type are honoured (the debugger makes both float32, or both int8).
    """
    from tensorflow.lite.python import convert as lite_convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    ops = sorted({_tflite_op_name(op) for op in spec.keep_float_ops})
    _check_denylist(calibrated, ops, list(spec.keep_float_nodes))
    return lite_convert.mlir_quantize(
        calibrated,
        disable_per_channel=not spec.per_channel,
        input_data_type=converter.inference_input_type or _tf_dtype("float32"),
        output_data_type=converter.inference_output_type or _tf_dtype("float32"),
        denylisted_ops=ops or None,
        denylisted_nodes=list(spec.keep_float_nodes) or None,
    )


def _tflite_op_name(name: str) -> str:
    """'MEAN', 'mean' and 'tfl.mean' all name the TFLite builtin MEAN."""
    name = name.strip()
    return (name[4:] if name.lower().startswith("tfl.") else name).upper()


def _check_denylist(calibrated: bytes, ops: list[str], nodes: list[str]) -> None:
    """Refuse deny-list entries that name no op type / output tensor of the model (they would be ignored)."""
    interpreter = _interpreter(calibrated)
    op_details = interpreter._get_ops_details()
    op_names = {op["op_name"] for op in op_details}
    node_names = {interpreter._get_tensor_details(t, 0)["name"] for op in op_details for t in op["outputs"]}
    for op in ops:
        if op not in op_names:
            raise ConversionError(f"keep_float_ops: the model has no '{op}' op{did_you_mean(op, op_names)}")
    for node in nodes:
        if node not in node_names:
            raise ConversionError(f"keep_float_nodes: the model has no node '{node}'{did_you_mean(node, node_names)}")


def _conversion_error(error: Exception, spec: TFLiteExport) -> ConversionError:
    text = str(error)
    missing = tflite_missing_ops(text)
    causes = converter_causes(text)
    if _TENSOR_LIST in text and not spec.select_tf_ops:
        return ConversionError(
            "TFLite cannot lower this model's TensorList ops (recurrent layers such as LSTM or GRU whose sizes are "
            f"not static{': ' + causes if causes else ''}): set select_tf_ops: true on export '{spec.name}' to keep "
            "them as TensorFlow ops (LiteRT then needs the Flex delegate), or fix the sequence length with "
            "model.input_shape")
    if missing.select and not spec.select_tf_ops:
        return ConversionError(f"TFLite has no builtin kernel for {', '.join(missing.select)}: set select_tf_ops: true "
                               f"on export '{spec.name}' to use TF Select (the runtime then needs the Flex delegate)")
    if missing.custom and not spec.custom_ops:
        return ConversionError(f"neither TFLite nor TF Select has a kernel for {', '.join(missing.custom)}: "
                               "set custom_ops: true and provide the kernels to the runtime")
    if missing:
        return ConversionError(f"TFLite conversion failed on {', '.join(missing.select + missing.custom)}: "
                               f"{causes or _first_line(error)}")
    return ConversionError(f"TFLite conversion ({spec.quantization}) failed: {causes or _first_line(error)}")


_TENSOR_LIST = "Lowering tensor list ops is failed"
_MLIR_ERROR = re.compile(r"error: (.+)$", re.MULTILINE)


def converter_causes(text: str, limit: int = 1500) -> str:
    """The converter's own error lines ('loc(...): error: <cause>'), without their location traces, each once:
    the cause is at the end of a long trace, which the first 300 characters of the message never reach."""
    found: list[str] = []
    for match in _MLIR_ERROR.finditer(text):
        cause = " ".join(match.group(1).split())
        if cause not in found:
            found.append(cause)
    joined = "; ".join(found)
    return joined if len(joined) <= limit else joined[:limit] + " ..."


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:500] if lines else type(error).__name__


def _tf_dtype(name: str):
    from converter.tf_env import tf

    return {"float32": tf().float32, "int8": tf().int8, "uint8": tf().uint8}[name]


def _interpreter(content: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=content,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def describe_tflite(content: bytes) -> dict[str, Any]:
    """Facts about a .tflite flatbuffer: op counts, tensor and weight dtype counts, input/output types and quantization."""
    interpreter = _interpreter(content)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only reader of op types and operands LiteRT offers
    produced = {t for op in ops for t in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = {t for op in ops for t in op["inputs"] if t >= 0 and t not in produced and t not in graph_inputs}
    return {
        "size_bytes": len(content),
        "ops": dict(sorted(Counter(op["op_name"] for op in ops if op["op_name"] != "DELEGATE").items())),
        "tensor_dtypes": _dtype_counts(tensors[i] for i in tensors),
        "weight_dtypes": _dtype_counts(tensors[i] for i in constants if i in tensors),
        "inputs": [_io_detail(d) for d in interpreter.get_input_details()],
        "outputs": [_io_detail(d) for d in interpreter.get_output_details()],
    }


def _dtype_counts(tensors) -> dict[str, int]:
    return dict(sorted(Counter(np.dtype(t["dtype"]).name for t in tensors).items()))


def _io_detail(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape_signature"]],
            "scale": float(scale), "zero_point": int(zero_point)}


def _note_unquantized(spec: TFLiteExport, qat: bool, result: ExportResult) -> None:
    """Say so when a weight-quantizing mode left every weight float (TFLite skips tensors under 1024 elements)."""
    weights = result.details.get("weight_dtypes", {})
    wanted = "float16" if spec.quantization == "float16" else "int8"
    if (spec.quantization != "none" or qat) and wanted not in weights:
        result.notes.append(f"no weight was stored as {wanted}: TFLite leaves small weight tensors "
                            "(under 1024 elements for dynamic range) in float32")
