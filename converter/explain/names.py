"""Which source layers an artifact's tensor name speaks of.

Converters keep the TensorFlow names in different shapes: TF.js graph nodes are the grappler-optimised op names
('StatefulPartitionedCall/mobilenet/conv_dw_1/depthwise'), TFLite joins the ops it fused with ';'
('mobilenet/conv1_relu/Relu6;mobilenet/conv1_bn/FusedBatchNormV3;mobilenet/conv1/Conv2D1'), ONNX keeps TF tensor
names and adds its own suffixes ('.../conv1_relu/Relu6:0_DequantizeLinear_Output'). A name is cut into parts
(';'), each part into path components ('/'), and a layer is spoken of when its key (a Keras layer's name, or an
op's path without the call prefix) appears in a part as consecutive components.
"""
from __future__ import annotations

import re
from typing import Iterable

_OUTPUT_INDEX = re.compile(r":\d+.*$")  # ':0', and what ONNX appends after it ('_DequantizeLinear_Output', ...)
_TRAILING_DIGITS = re.compile(r"\d+$")


def parts(name: str) -> list[list[str]]:
    """'a/b:0_QuantizeLinear;c/d' -> [['a', 'b'], ['c', 'd']]."""
    found = []
    for part in name.split(";"):
        part = _OUTPUT_INDEX.sub("", part.strip())
        components = [c for c in part.split("/") if c]
        if components:
            found.append(components)
    return found


def _same(component: str, key: str, last: bool) -> bool:
    """Equal, or (for the last component of a key) equal once digits the converter appended are dropped."""
    return component == key or (last and component.startswith(key) and _TRAILING_DIGITS.fullmatch(component[len(key):]) is not None)


def speaks_of(name_parts: list[list[str]], key: tuple[str, ...]) -> bool:
    if not key:
        return False
    width = len(key)
    for components in name_parts:
        for start in range(len(components) - width + 1):
            if all(_same(components[start + i], key[i], i == width - 1 and width > 1) for i in range(width)):
                return True
    return False


def mentioned(name: str, keys: dict[str, tuple[str, ...]]) -> list[str]:
    """The layers (by name) whose key appears in `name`."""
    cut = parts(name)
    return [layer for layer, key in keys.items() if speaks_of(cut, key)]


def mentioned_anywhere(names: Iterable[str], keys: dict[str, tuple[str, ...]]) -> set[str]:
    """Every layer spoken of by at least one of `names` (tensor, node and weight names of the artifact)."""
    found: set[str] = set()
    for name in names:
        found.update(mentioned(name, {k: v for k, v in keys.items() if k not in found}))
    return found
