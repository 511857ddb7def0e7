"""Local error of a TFLite int8 model: TFLite's own numeric verification, as QuantizationDebugger uses it.

LiteRT cannot run part of a model on given inputs, so the local error comes from the debug model that
tf.lite.experimental.QuantizationDebugger builds (TF 2.19): the export's converter calibrated again on the same
samples, then quantized with `enable_numeric_verify`, which pairs every quantized op with its float twin fed the
dequantized inputs of the quantized op, joined by a NumericVerify op. The debugger reduces each pair to error
statistics; here the pair's two tensors are read directly (experimental_preserve_all_tensors) to give the same
SQNR and cosine as the other formats. Calibration is deterministic, so the debug model's quantized ops carry the
artifact's scales: that is checked tensor by tensor and reported.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from converter.explain.measure import compare

NUMERIC_VERIFY = "NumericVerify"


def build(model_ref, spec, calibration) -> tuple[bytes, bytes]:
    """(debug model, calibrated float model) for a TFLite int8 export spec."""
    from converter.exports import tflite as export
    from converter.exports.base import ExportContext, ExportResult
    from converter.tf_env import tf
    from tensorflow.lite.python import convert as lite_convert

    converter = export._converter(model_ref, spec)
    export._configure(converter, spec, False, ExportContext(build_id="explain", calibration=calibration), ExportResult())
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    ops = sorted({export._tflite_op_name(op) for op in spec.keep_float_ops})
    debug = lite_convert.mlir_quantize(
        calibrated, disable_per_channel=not spec.per_channel, enable_numeric_verify=True,
        input_data_type=tf().float32, output_data_type=tf().float32,
        denylisted_ops=ops or None, denylisted_nodes=list(spec.keep_float_nodes) or None)
    return debug, calibrated


def _interpreter(content: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def local_errors(debug: bytes, x: np.ndarray, artifact_quantization: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """{'layers': {artifact tensor name: {'sqnr_db', 'cosine'}}, 'scales_match': k, 'scales_compared': n}."""
    values, same, compared = local_values(debug, x, artifact_quantization)
    layers = {ours: compare(reference, value) for ours, (reference, value) in values.items()}
    return {"layers": layers, "scales_match": same, "scales_compared": compared}


def local_values(debug: bytes, x: np.ndarray, artifact_quantization: dict[str, tuple[float, int]]
                 ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int, int]:
    """({artifact tensor name: (float twin's output, quantized op's output dequantized)}, scales matching, scales
    compared).

    The debug model names its tensors after the artifact's with digits appended ('.../Conv2D1' becomes
    '.../Conv2D11'), so the two are aligned by name without trailing digits, in op order."""
    interpreter = _interpreter(debug)
    pairs = []
    for op in interpreter._get_ops_details():
        if op["op_name"] == NUMERIC_VERIFY:
            quantized, reference = op["inputs"][:2]
            pairs.append((interpreter._get_tensor_details(quantized, 0), reference))
    floats: dict[str, list[np.ndarray]] = {}
    dequantized: dict[str, list[np.ndarray]] = {}
    index = interpreter.get_input_details()[0]["index"]
    for sample in x:
        interpreter.set_tensor(index, sample[None].astype(np.float32))
        interpreter.invoke()
        for detail, reference in pairs:
            scale, zero_point = detail["quantization"]
            value = interpreter.get_tensor(detail["index"]).astype(np.float32)
            if scale:
                value = (value - zero_point) * scale
            floats.setdefault(detail["name"], []).append(interpreter.get_tensor(reference).astype(np.float32))
            dequantized.setdefault(detail["name"], []).append(value)
    names = align(list(artifact_quantization), [detail["name"] for detail, _ in pairs])
    values = {ours: (np.concatenate(floats[theirs]), np.concatenate(dequantized[theirs])) for ours, theirs in names.items()}
    back = {theirs: ours for ours, theirs in names.items()}
    same = compared = 0
    for detail, _ in pairs:
        theirs = artifact_quantization.get(back.get(detail["name"], ""))
        if theirs is None:
            continue
        compared += 1
        same += bool(np.isclose(theirs[0], detail["quantization"][0], rtol=1e-6) and theirs[1] == detail["quantization"][1])
    return values, same, compared


def denylist_names(calibrated: bytes, artifact_names: list[str]) -> dict[str, str]:
    """artifact tensor name -> the name keep_float_nodes takes (an op output of the calibrated model), matched by
    name, else by op position (quantization adds QUANTIZE/DEQUANTIZE ops only)."""
    interpreter = _interpreter(calibrated)
    outputs = [interpreter._get_tensor_details(op["outputs"][0], 0)["name"] for op in interpreter._get_ops_details()
               if op["outputs"]]
    known = set(outputs)
    found = {}
    for name in artifact_names:
        if name in known:
            found[name] = name
        else:
            stripped = _strip_suffix(name)
            match: Optional[str] = next((o for o in outputs if _strip_suffix(o) == stripped), None)
            if match is not None:
                found[name] = match
    return found


def align(ours: list[str], theirs: list[str]) -> dict[str, str]:
    """Each of `ours` to the first unused name of `theirs` equal to it without trailing digits, in order."""
    free: dict[str, list[str]] = {}
    for name in theirs:
        free.setdefault(_strip_suffix(name), []).append(name)
    found = {}
    for name in ours:
        waiting = free.get(_strip_suffix(name))
        if waiting:
            found[name] = waiting.pop(0)
    return found


def _strip_suffix(name: str) -> str:
    """The MLIR quantizer appends digits to names it duplicates ('.../Conv2D' -> '.../Conv2D1')."""
    return name.rstrip("0123456789")


def artifact_quantization(runtime) -> dict[str, tuple[float, int]]:
    """Op output tensor name -> (scale, zero point) of the artifact's quantized activations, in op order."""
    return quantized_outputs(runtime._inspector())


def quantized_outputs(interpreter) -> dict[str, tuple[float, int]]:
    """Op output tensor name -> (scale, zero point) of a LiteRT interpreter's quantized activations, in op order."""
    found = {}
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            detail = interpreter._get_tensor_details(index, 0)
            if detail["quantization"][0]:
                found[detail["name"]] = (float(detail["quantization"][0]), int(detail["quantization"][1]))
    return found
