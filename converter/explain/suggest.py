"""What to change in the recipe, in its own terms, to keep the blamed layers at higher precision.

- TF.js: the `quantize` map with the layers' weights moved one dtype up (uint8 -> uint16, uint16 -> float16), as
  fnmatch globs on the weight names model.json writes ('*/conv_dw_1/*' when that matches exactly the layer's
  weights, else the names themselves); tfjs gives '*' only the weights no other dtype claims.
- TFLite: `keep_float_nodes`, the layers' op output names as the converter's deny-list takes them.
- ONNX: `exclude_nodes`, the names the layers' nodes had in the float model (onnxruntime's dynamic quantizer
  renames a node it quantizes '<name>_quant').
"""
from __future__ import annotations

import fnmatch
from typing import Any, Optional

import yaml

HIGHER = {"uint8": "uint16", "uint16": "float16"}
ONNX_DYNAMIC = frozenset({"ConvInteger", "MatMulInteger"})  # named '<float node>_quant' by quantize_dynamic
ONNX_ADDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"})


def tfjs(layers: list[str], layer_weights: dict[str, list[str]], stored: dict[str, str], quantize: Optional[dict],
         all_names: list[str]) -> Optional[dict[str, Any]]:
    """`stored`: weight name -> its dtype in model.json."""
    moved: dict[str, list[str]] = {}
    kept = []
    for layer in layers:
        for weight in layer_weights.get(layer, []):
            target = HIGHER.get(stored.get(weight, "float32"))
            if target is None:
                kept.append(weight)
                continue
            moved.setdefault(target, []).append(weight)
    if not moved:
        return None
    quantize = quantize or {}

    def idle(key: str, value: Any) -> bool:  # a default that does nothing: the minmax range, an unused sample count
        return (key, value) == ("range", "minmax") or (key == "calibration_samples" and not quantize.get("bias_correction"))

    mapping = {k: list(v) if isinstance(v, list) else v for k, v in quantize.items()
               if v and not idle(k, v)}  # the export's own keys, without defaults that do nothing
    for target, weights in moved.items():
        globs = _globs(weights, all_names)
        mapping[target] = [g for g in mapping.get(target, []) if g not in globs] + globs
    recipe = {"quantize": mapping}
    return {"key": "quantize", "recipe": recipe, "yaml": _yaml(recipe),
            "text": f"Keep their weights at higher precision: `{_yaml(recipe)}`."}


def _globs(weights: list[str], all_names: list[str]) -> list[str]:
    """For each weight, the innermost scope glob '*/<scope>/*' that matches only weights in `weights` (the layer's
    name usually: '*/conv_b/*'), else the weight's exact name."""
    wanted = set(weights)
    globs: list[str] = []
    for weight in weights:
        scopes = weight.split("/")[:-1]
        chosen = weight
        for scope in reversed(scopes):
            glob = f"*/{scope}/*"
            if set(fnmatch.filter(all_names, glob)) <= wanted:
                chosen = glob
                break
        if chosen not in globs:
            globs.append(chosen)
    return globs


def tflite(layers: list[str], names: dict[str, str], current: list[str]) -> Optional[dict[str, Any]]:
    """`names`: layer -> its node name for the deny-list."""
    nodes = [names[layer] for layer in layers if layer in names]
    if not nodes:
        return None
    recipe = {"keep_float_nodes": list(dict.fromkeys([*current, *nodes]))}
    return {"key": "keep_float_nodes", "recipe": recipe, "yaml": _yaml(recipe),
            "text": f"Keep them in float: `{_yaml(recipe)}`."}


def onnx(layers: list[str], layer_nodes: dict[str, list[tuple[str, str]]], current: list[str],
         dynamic: bool) -> Optional[dict[str, Any]]:
    """`layer_nodes`: layer -> [(op type, node name)] of the nodes that compute it in the artifact. In a dynamic
    model only the integer ops were quantized (the rest, and the scale arithmetic around them, is float); in a
    QDQ model every node but the QuantizeLinear/DequantizeLinear pairs keeps its float model's name."""
    nodes = []
    for layer in layers:
        for op, node in layer_nodes.get(layer, []):
            if not node or op in ONNX_ADDED:
                continue
            if op in ONNX_DYNAMIC:
                nodes.append(node[: -len("_quant")] if node.endswith("_quant") else node)
            elif not dynamic:
                nodes.append(node)
    if not nodes:
        return None
    recipe = {"exclude_nodes": list(dict.fromkeys([*current, *nodes]))}
    return {"key": "exclude_nodes", "recipe": recipe, "yaml": _yaml(recipe),
            "text": f"Leave them in float: `{_yaml(recipe)}`."}


def _yaml(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, default_flow_style=True, width=10_000, sort_keys=False).strip()


def whole_model(fmt: str, quantization: str, export: dict[str, Any]) -> Optional[str]:
    """A finer scheme for every layer, in recipe terms, when no small set of layers can repair an artifact."""
    if fmt.startswith("tfjs"):
        finer = {"uint8": "uint16", "uint16": "float16"}.get(quantization)
        return f"quantize: {{{finer}: ['*']}}" if finer else None
    if fmt == "onnx":
        if quantization == "dynamic_int8":
            return "quantization: int8 (static QDQ with per-channel weights; ConvInteger takes one weight scale per tensor)"
        if quantization == "int8" and not export.get("per_channel", True):
            return "per_channel: true"
        return None
    if fmt == "tflite" and quantization == "int8":
        return "quantization: int16x8"
    return None
