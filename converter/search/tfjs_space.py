"""The TF.js search space: one dtype per weight, read from a float artifact's model.json; no TensorFlow import.

Weights are ranked by how much the most compressed dtype would hurt them, measured on the weight itself (a cheap
proxy: no candidate has to be built to rank). The quantizer is simulated as tensorflowjs does it (affine with the
zero point nudged onto the grid, or a float16 cast).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

@dataclass(frozen=True)
class Weight:
    name: str
    shape: tuple[int, ...]
    values: np.ndarray  # float32

    @property
    def elements(self) -> int:
        return int(self.values.size)


def read_weights(artifact: Path) -> list[Weight]:
    """The float32 weights of an unquantized TF.js artifact, in manifest order (others cannot be quantized)."""
    from converter.exports.tfjs_per_channel import read_groups

    manifest = json.loads((artifact / "model.json").read_text())["weightsManifest"]
    return [Weight(entry["name"], tuple(entry["data"].shape), entry["data"])
            for group in read_groups(artifact, manifest) for entry in group if entry["data"].dtype == np.float32]


def roundtrip(values: np.ndarray, dtype: str, trailing: int = 0, method: str = "minmax") -> np.ndarray:
    """The values as the export stores and restores them at `dtype`: one affine range per weight, as tensorflowjs
    does (tensorflowjs/quantization.py), or per output channel for a kernel with `trailing` output-channel dims
    (converter/exports/tfjs_per_channel.py); `method`: the range (converter/exports/tfjs_ranges.py)."""
    from converter.exports import tfjs_per_channel, tfjs_ranges

    if trailing and dtype in ("uint8", "uint16"):
        return tfjs_per_channel.stored(values, dtype, trailing, method)
    return tfjs_ranges.stored(values, dtype, method)


def typical(values: np.ndarray) -> float:
    """A weight's typical magnitude: the median |value| (its mean where most values are zero). Not the RMS: one
    outlier would make every other value's error look small."""
    magnitudes = np.abs(values)
    median = float(np.median(magnitudes)) if magnitudes.size else 0.0
    return median if median > 0 else float(np.mean(magnitudes)) if magnitudes.size else 0.0


def sensitivity(weight: Weight, dtype: str, ranking: str, trailing: int = 0, method: str = "minmax") -> float:
    """How much storing `weight` at `dtype` hurts it, relative to its typical magnitude: the RMS error of the
    round trip ('quantization_error'), or the range ('range', outliers first)."""
    values = weight.values.astype(np.float64)
    scale = typical(values)
    if scale == 0.0:
        return 0.0
    if ranking == "range":
        return float((values.max() - values.min()) / scale)
    error = roundtrip(weight.values, dtype, trailing, method) - values
    return float(np.sqrt(np.mean(error ** 2)) / scale)


def rank(weights: list[Weight], dtype: str, ranking: str, kernels: dict[str, int] | None = None,
         method: str = "minmax") -> list[tuple[str, float]]:
    """(name, score), the first to revert first; ties keep manifest order.

    'error_per_byte' is the greedy order of a knapsack: a weight's relative error adds roughly independently to the
    output's, so reverting it removes about its squared error, at the cost of its elements' extra bytes; the
    weights that remove the most error per byte come first (small, sensitive ones: first convolutions, depthwise
    kernels, biases). The other rankings ignore the cost."""
    kernels = kernels or {}
    if ranking == "error_per_byte":
        scored = [(w.name, sensitivity(w, dtype, "quantization_error", kernels.get(w.name, 0), method) ** 2
                   / max(1, w.elements)) for w in weights]
    else:
        scored = [(w.name, sensitivity(w, dtype, ranking, kernels.get(w.name, 0), method)) for w in weights]
    return sorted(scored, key=lambda item: -item[1])


def to_quantize(assignment: dict[str, str], per_channel: bool = False, method: str = "minmax",
                bias_correction: bool = False) -> dict[str, Any] | None:
    """An assignment as a recipe `quantize:` block: the most common quantized dtype takes '*' (every weight no
    other list claims) unless some weight stays float32, which tfjs can only express by listing the others;
    `per_channel`: every kernel that can be is stored per channel; `method`: the uint8/uint16 range;
    `bias_correction`: biases corrected for the kernels' rounding."""
    from converter.exports.tfjs_per_channel import exact_glob

    counts: dict[str, int] = {}
    for dtype in assignment.values():
        counts[dtype] = counts.get(dtype, 0) + 1
    quantized = [d for d in ("uint8", "uint16", "float16") if counts.get(d)]
    if not quantized:
        return None
    star = None if counts.get("float32") else max(quantized, key=lambda d: counts[d])
    block: dict[str, Any] = {}
    for dtype in quantized:
        block[dtype] = ["*"] if dtype == star else [exact_glob(n) for n, d in assignment.items() if d == dtype]
    if per_channel and {"uint8", "uint16"} & set(quantized):
        block["per_channel"] = ["*"]
    if method != "minmax":
        block["range"] = method
    if bias_correction:
        block["bias_correction"] = True
    return block


def space(weights: list[Weight], dtypes: list[str], ranking: str, kernels: dict[str, int] | None = None,
          method: str = "minmax", biases: set[str] | None = None):
    """The search space of a float TF.js artifact's weights: one dtype each, built with a `quantize:` map;
    `kernels` (name -> output-channel dims): the weights stored per channel at uint8/uint16. `biases`: the biases
    a bias correction rewrites (None: no correction). They stay at the second dtype, outside the search: the
    correction is only as fine as the bias that stores it (measured on MobileNet v1: a search that let 25 of them
    go to uint8 chose a candidate that lost 1.6 points held out, against -0.6 with all of them uint16), and all
    of them together are about 1 % of the weights."""
    from converter.search.space import Space

    fixed = {name: dtypes[1] for name in sorted(biases or ())}
    searched = [w for w in weights if w.name not in fixed]
    scored = rank(searched, dtypes[0], ranking, kernels, method)
    per_channel = bool(kernels)
    return Space("weight", ranking, list(dtypes), [n for n, _ in scored], dict(scored),
                 {w.name: w.elements for w in weights},
                 lambda assignment: {"quantize": to_quantize({**fixed, **assignment}, per_channel, method,
                                                             biases is not None)},
                 [w.name for w in weights], fixed=fixed)
