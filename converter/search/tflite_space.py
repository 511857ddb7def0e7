"""The TFLite search space: full-integer int8 with a set of nodes kept in float (`keep_float_nodes`).

Items are the quantized ops of the all-int8 model, named as keep_float_nodes takes them (an op output of the
calibrated model); levels are 'int8' and 'float'. int16x8 is not a level a node can take alone (the converter's
deny-lists keep a node in float, they cannot give one node 16-bit activations): it is a whole-model candidate, tried
once when all-int8 fails, and chosen if it is the smallest that holds the budget.

The nodes are ranked by their local error (converter.explain.tflite_debug): the numeric-verification debug model
runs every quantized op beside its float twin fed the same dequantized inputs, so a node's error is its own, not
what it inherits. The score is the median over the node's output channels of their SQNR, not the whole tensor's
SQNR: int8 activations share one scale per tensor, and a channel far larger than the others (a huge constant logit,
an outlier feature) sets that scale and rounds the others away, while the whole tensor's SQNR, dominated by the
large channel, looks fine. Not the worst channel's either: a channel that rarely fires, with a tiny signal, rounds
to zero in any node (measured on the seeded test model of tests/test_search.py: the wrecked head's whole-tensor
SQNR is 51.7 dB, the best of its four nodes; its median channel 0 dB; the worst channel of a healthy Dense: 0 dB).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converter.search.space import Space

LEVELS = ["int8", "float"]
WHOLE_MODEL = "int16x8"  # int16 activations, int8 weights: tried for the whole model once when all-int8 fails
RANKING = "median_channel_sqnr"


def artifact_quantization(model: Path) -> dict[str, tuple[float, int]]:
    """Op output tensor name -> (scale, zero point) of a .tflite model's quantized activations, in op order."""
    from converter.explain.tflite_debug import quantized_outputs
    from converter.exports.tflite import _interpreter

    return quantized_outputs(_interpreter(model.read_bytes()))


def median_channel_sqnr(reference: np.ndarray, value: np.ndarray) -> float:
    """The median SQNR (dB) over the last axis' channels that carry any signal (the whole tensor's if none does)."""
    from converter.explain.measure import sqnr_db

    channels = reference.shape[-1] if reference.ndim > 1 else 1
    ref, out = reference.reshape(-1, channels), value.reshape(-1, channels)
    found = [sqnr_db(ref[:, c], out[:, c]) for c in range(channels) if np.any(ref[:, c])]
    return float(np.median(found)) if found else sqnr_db(reference, value)


def weight_elements(calibrated: bytes) -> dict[str, int]:
    """Node (op output name) -> elements of the constant tensors its op reads (its weights and bias)."""
    from converter.exports.tflite import _interpreter

    interpreter = _interpreter(calibrated)
    ops = interpreter._get_ops_details()
    produced = {t for op in ops for t in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    found = {}
    for op in ops:
        if not op["outputs"]:
            continue
        name = interpreter._get_tensor_details(op["outputs"][0], 0)["name"]
        constants = [t for t in op["inputs"] if t >= 0 and t not in produced and t not in inputs]
        found[name] = int(sum(np.prod(interpreter._get_tensor_details(t, 0)["shape"]) for t in constants))
    return found


def space(model_ref, spec, calibration, x: np.ndarray, floor_artifact: Path) -> Space:
    """The nodes of the all-int8 export `spec` (whose artifact is `floor_artifact`), ranked on samples `x`."""
    from converter.explain import tflite_debug

    if isinstance(x, dict):
        raise ValueError("a TFLite search ranks nodes on single-input models only")
    debug, calibrated = tflite_debug.build(model_ref, spec, calibration)
    values, _, _ = tflite_debug.local_values(debug, x, artifact_quantization(floor_artifact))
    nodes = tflite_debug.denylist_names(calibrated, list(values))
    scores: dict[str, float] = {}
    for artifact_name, node in nodes.items():
        if node not in scores:
            scores[node] = round(-median_channel_sqnr(*values[artifact_name]), 3)  # the lowest SQNR first
    elements = weight_elements(calibrated)
    order = [node for node in elements if node in scores]  # model order
    ranked = sorted(order, key=lambda node: -scores[node])  # stable: ties keep model order

    def export_keys(assignment: dict[str, str]) -> dict[str, Any]:
        if assignment and set(assignment.values()) == {WHOLE_MODEL}:
            return {"quantization": WHOLE_MODEL, "keep_float_nodes": []}
        return {"keep_float_nodes": [node for node in order if assignment.get(node) == "float"]}

    return Space("node", RANKING, list(LEVELS), ranked, scores, {n: elements.get(n, 0) for n in order}, export_keys,
                 order, (WHOLE_MODEL,))
