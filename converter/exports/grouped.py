"""Grouped convolutions that are depthwise convolutions, rebuilt as such before an ONNX or TF.js export.

tf_keras runs `Conv2D(groups=N)` as an XLA-compiled function that neither tf2onnx nor TF.js can run. When every
group is one input channel (groups == the input's channels, as ConvNeXt writes its depthwise convolutions), the
layer is exactly `DepthwiseConv2D(depth_multiplier=filters // groups)`: output channel g * m + j of the grouped
convolution is output j of input channel g in both, so the kernel [kh, kw, 1, filters] only changes shape to
[kh, kw, groups, m]. Such layers are replaced in a clone of the model, saved as a temporary SavedModel that the
export converts instead. Other grouped convolutions (RegNet's: several channels per group) are left, and the
exporters refuse them with the construct named.
"""
from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from converter.model_ref import ModelRef

_GROUPS = re.compile(rb'"groups": (\d+)')


def _may_have_groups(model: ModelRef) -> bool:
    """Cheap test on the SavedModel's Keras metadata, so that a model without groups is never loaded here."""
    metadata = Path(model.path) / "keras_metadata.pb"
    if not metadata.is_file():
        return True  # another layout: load it and see
    return any(int(value) > 1 for value in _GROUPS.findall(metadata.read_bytes()))


def depthwise_layers(keras_model: Any) -> list[str]:
    """Names of the top-level Conv2D layers with groups > 1 whose every group is one input channel."""
    found = []
    for layer in keras_model.layers:
        groups = getattr(layer, "groups", 1)
        if type(layer).__name__ != "Conv2D" or not isinstance(groups, int) or groups <= 1:
            continue
        if layer.data_format == "channels_last" and layer.input_shape[-1] == groups and layer.filters % groups == 0:
            found.append(layer.name)
    return found


@contextlib.contextmanager
def as_depthwise(model: ModelRef) -> Iterator[tuple[ModelRef, list[str]]]:
    """(the model to export, notes): a clone with the depthwise-equivalent grouped convolutions rebuilt, or `model`."""
    if model.kind != "keras" or not _may_have_groups(model):
        yield model, []
        return
    from converter.tf_env import keras

    keras_model = model.load_keras()
    names = depthwise_layers(keras_model)
    if not names:
        yield model, []
        return
    with tempfile.TemporaryDirectory(prefix="convert-depthwise-") as folder:
        try:
            _rebuild(keras_model, names).save(folder, save_format="tf")
        except Exception:  # noqa: BLE001  a model tf_keras cannot rebuild or save: the exporter refuses it as before
            yield model, []
            return
        shown = ", ".join(f"'{name}'" for name in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        note = (f"repaired {len(names)} grouped convolution(s) with one input channel per group ({shown}): rebuilt "
                "as DepthwiseConv2D, the same operation, which ONNX and TF.js can run (tf_keras runs Conv2D(groups) as "
                "an XLA-compiled function they cannot)")
        yield ModelRef(Path(folder), "keras", trusted_code=model.trusted_code), [note]


def _rebuild(keras_model: Any, names: list[str]) -> Any:
    """The model with the `names` layers replaced by DepthwiseConv2D holding the same weights; every other layer is
    the same object (so custom layers need no config round trip)."""
    from converter.tf_env import keras

    k = keras()
    replaced = {}

    def clone(layer):
        if layer.name not in names:
            return layer
        replaced[layer.name] = k.layers.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate,
            depth_multiplier=layer.filters // layer.groups, use_bias=layer.use_bias,
            activation=layer.activation, name=layer.name)
        return replaced[layer.name]

    rebuilt = k.models.clone_model(keras_model, clone_function=clone)
    for name, layer in replaced.items():
        original = keras_model.get_layer(name)
        kernel, *rest = original.get_weights()
        layer.set_weights([kernel.reshape(*kernel.shape[:2], original.groups, original.filters // original.groups), *rest])
    return rebuilt
