"""TF.js graph and layers models through the tensorflowjs converter's Python API.

Graph models come from the SavedModel signature; layers models from the tf_keras model, with
topologies tfjs-layers cannot express repaired first (GlobalPooling keepdims=True).
Quantization globs follow tfjs's own rules: fnmatch patterns on the weight names written to
model.json's weightsManifest, and a list that holds '*' quantizes every weight no other dtype claims.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from converter.errors import ConversionError, RecipeError
from converter.exports.base import ExportContext, ExportResult, unique_name
from converter.model_ref import ModelRef
from converter.exports.tfjs_ranges import clipped
from converter.recipe.schema import Quantize, TfjsGraphExport, TfjsLayersExport

QUANTIZE_DTYPES = ("uint8", "uint16", "float16")
DEBUG_OPS = frozenset({"Assert", "CheckNumerics", "Print"})
KEEPDIMS_POOLING = frozenset({"GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D"})
_NESTED_MODELS = frozenset({"Functional", "Model", "Sequential"})
_MAX_NAMED = 10


# ----------------------------------------------------------------------------- graph
def export_graph(model: ModelRef, spec: TfjsGraphExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Convert the SavedModel signature `model.signature` to a TF.js graph model in out_dir."""
    from converter.tf_env import tf

    tf()
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as converter

    quantization = quantization_map(spec.quantize, spec.name)
    # per-channel kernels and bias correction: quantized here, after the converter wrote the float graph
    here = bool(spec.quantize and (spec.quantize.per_channel or spec.quantize.bias_correction))
    splitting = _weights_grouped_by_scope(converter) if spec.split_weights_by_layer else contextlib.nullcontext()
    try:
        with splitting, clipped(spec.quantize.range if spec.quantize else "minmax"):
            converter.convert_tf_saved_model(
                str(model.path), str(out_dir), signature_def=model.signature,
                quantization_dtype_map=None if here else quantization, strip_debug_ops=spec.strip_debug_ops,
                control_flow_v2=spec.control_flow_v2, weight_shard_size_bytes=spec.shard_size,
                metadata=_metadata(ctx))
    except ValueError as err:
        if "Unsupported Ops" in str(err):
            raise ConversionError(_unsupported_message(model, spec, str(err))) from None
        _raise_quantization_conflict(err, spec.name)
        raise ConversionError(f"{model.path}: the tensorflowjs converter refused the model: {_one_line(err)}") from None
    except Exception as err:  # the converter raises bare Exceptions and TF errors alike
        raise ConversionError(f"{model.path}: the tensorflowjs converter refused the model: {_one_line(err)}") from None
    stored_here = _quantize_here(out_dir, spec, quantization, ctx) if here else {}
    repairs = repair_graph(out_dir / "model.json")
    result = _result(out_dir, spec.quantize, ctx)
    result.details.update(stored_here)
    result.notes += repairs
    if repairs:
        result.details["repairs"] = repairs
    return result


_FUSED = {"_FusedConv2D": ("Conv2D", 3), "FusedDepthwiseConv2dNative": ("DepthwiseConv2dNative", (2, 3)),
          "_FusedMatMul": ("MatMul", 1)}  # fused op -> (plain op, filter dims whose product is the bias length)
_FUSED_ONLY_ATTRS = ("fused_ops", "num_args", "num_host_args", "TArgs", "leakyrelu_alpha", "epsilon", "filter_format")


def repair_graph(model_json: Path) -> list[str]:
    """Unfuse the bias of fused convolutions / matmuls whose bias is not one value per output channel.

    The tensorflowjs converter fuses Conv2D + Add(constant) into _FusedConv2D even when the constant is a scalar
    (hard-sigmoid's `x + 3` after a convolution, in MobileNetV3), and tfjs-backend-wasm's FusedConv2D takes only a
    rank-1 bias of the channel count ("FusedConv2D only supports rank-1 bias but got rank 0"); cpu and webgl take
    any. Such a node becomes the plain op, an AddV2 with the same constant and its activation, the last of them
    keeping the node's name so that every consumer is unchanged. Weights are untouched.
    """
    import base64

    content = json.loads(model_json.read_text())
    shapes = {w["name"]: w["shape"] for group in content["weightsManifest"] for w in group["weights"]}
    topology = content["modelTopology"]
    graphs = [topology.get("node", [])] + [fn.get("nodeDef", []) for fn in (topology.get("library") or {}).get("function", [])]
    notes: list[str] = []
    for nodes in graphs:
        for node in list(nodes):
            plain = _FUSED.get(node.get("op"))
            if plain is None:
                continue
            fused = [base64.b64decode(v).decode() for v in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])]
            data = [i for i in node.get("input", []) if not i.startswith("^")]
            if not fused or fused[0] != "BiasAdd" or len(data) < 3:
                continue
            bias, filter_shape = shapes.get(data[2]), shapes.get(data[1])
            if filter_shape is None:
                continue
            dims = plain[1] if isinstance(plain[1], tuple) else (plain[1],)
            channels = 1
            for dim in dims:
                channels *= int(filter_shape[dim]) if dim < len(filter_shape) else 1
            if bias is not None and list(bias) == [channels]:
                continue
            # a bias that is no weight is a tensor the graph computes: the converter fused a residual Add
            # (ResNetV2's conv + shortcut) as if it were a bias
            what = f"a bias of shape {bias} (not [{channels}])" if bias is not None else \
                f"the computed tensor '{data[2]}' as its bias (a residual add)"
            _unfuse(nodes, node, plain[0], data, [i for i in node["input"] if i.startswith("^")], fused[1:])
            notes.append(f"repaired fused {plain[0]} '{node['name']}' with {what}: unfused into {plain[0]} + AddV2"
                         + (f" + {fused[1]}" if len(fused) > 1 else "")
                         + ", because tfjs-backend-wasm's fused kernels take only a rank-1 bias of the channel count")
    if notes:
        model_json.write_text(json.dumps(content))
    return notes


def _unfuse(nodes: list[dict[str, Any]], node: dict[str, Any], op: str, data: list[str], control: list[str],
            activation: list[str]) -> None:
    name, attrs = node["name"], node.get("attr", {})
    dtype = attrs.get("T", {"type": "DT_FLOAT"})
    alpha = attrs.get("leakyrelu_alpha")
    index = nodes.index(node)
    node["name"] = f"{name}/unfused_{op}"
    node["op"] = op
    node["input"] = data[:2] + control
    for key in _FUSED_ONLY_ATTRS:
        node.get("attr", {}).pop(key, None)
    chain = [{"name": f"{name}/unfused_bias" if activation else name, "op": "AddV2",
              "input": [node["name"], data[2]], "attr": {"T": dtype}}]
    if activation:
        act_attrs: dict[str, Any] = {"T": dtype}
        act_inputs = [chain[0]["name"]]
        if activation[0] == "LeakyRelu" and alpha is not None:
            act_attrs["alpha"] = alpha
        if activation[0] == "Prelu" and len(data) > 3:
            act_inputs.append(data[3])
        chain.append({"name": name, "op": activation[0], "input": act_inputs, "attr": act_attrs})
    nodes[index + 1:index + 1] = chain


def tfjs_supported_ops(strip_debug_ops: bool) -> frozenset[str]:
    """The TensorFlow op names the tensorflowjs converter accepts (its op_list/*.json)."""
    from tensorflowjs import resource_loader

    names: set[str] = set()
    for filename in resource_loader.list_dir("op_list"):
        if filename.endswith(".json"):
            with resource_loader.open_file(os.path.join("op_list", filename)) as handle:
                names |= {entry["tfOpName"] for entry in json.load(handle)}
    return frozenset(names | DEBUG_OPS) if strip_debug_ops else frozenset(names)


def find_unsupported_ops(model: ModelRef, strip_debug_ops: bool = True, control_flow_v2: bool = True) -> list[tuple[str, str]]:
    """(op, node) pairs of the frozen signature graph that TF.js cannot run, as the converter freezes it."""
    from converter.tf_env import tf

    tf()
    from tensorflow.python.framework import convert_to_constants

    _, function = model.load_signature()
    graph_def = convert_to_constants.convert_variables_to_constants_v2(
        function, lower_control_flow=not control_flow_v2, aggressive_inlining=True).graph.as_graph_def()
    supported = tfjs_supported_ops(strip_debug_ops)
    nodes = [(node.op, node.name) for node in graph_def.node]
    nodes += [(node.op, f"{fn.signature.name}/{node.name}") for fn in graph_def.library.function for node in fn.node_def]
    return sorted({(op, name) for op, name in nodes if op not in supported})


def _unsupported_message(model: ModelRef, spec: TfjsGraphExport, converter_message: str) -> str:
    found = find_unsupported_ops(model, spec.strip_debug_ops, spec.control_flow_v2)
    if not found:  # only the optimized graph holds them
        return f"{model.path}: TF.js has no kernel for: {_one_line(converter_message.split(chr(10), 1)[-1])}"
    named = ", ".join(f"{op} (node {node})" for op, node in found[:_MAX_NAMED])
    more = f" and {len(found) - _MAX_NAMED} more" if len(found) > _MAX_NAMED else ""
    ops = sorted({op for op, _ in found})
    hints = _ops_hint(model, ops)
    if hints:  # the construct and the change first; the nodes after, shortened
        named = ", ".join(node for _, node in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return f"{model.path}: {'; '.join(hints)} (TF.js does not support {', '.join(ops)}: nodes {named}{more})"
    return f"{model.path}: TF.js does not support the op(s) {', '.join(ops)}, used by {named}{more}"


def _ops_hint(model: ModelRef, ops: list[str]) -> list[str]:
    """The construct behind unsupported ops that Keras applications produce, and the change that works."""
    hints = []
    grouped = grouped_convolutions(model)
    if grouped:
        hints.append(f"grouped convolutions ({_grouped_text(grouped)}) have no TF.js kernel, and tf_keras runs them "
                     "as XLA-compiled functions (PartitionedCall) the converter cannot inline: export this model as "
                     "tflite or onnx, or rebuild it with groups=1")
    if "Erfc" in ops:
        hints.append("Erfc comes from the exact GELU (Activation('gelu')), which TF.js lacks: rebuild with the "
                     "approximate GELU (tf.nn.gelu(x, approximate=True)), or export tflite or onnx")
    return hints


def grouped_convolutions(model: ModelRef) -> list[tuple[str, int]]:
    """(layer name, groups) of the convolutions with groups > 1 of a Keras model (none for a plain SavedModel)."""
    if model.kind != "keras":
        return []
    try:
        keras_model = model.load_keras()
    except Exception:  # a model tf_keras cannot rebuild: nothing to tell
        return []
    return _grouped_layers(keras_model)


def _grouped_layers(keras_model: Any) -> list[tuple[str, int]]:
    found = []
    stack = [keras_model]
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        groups = getattr(layer, "groups", 1)
        if isinstance(groups, int) and groups > 1:
            found.append((layer.name, groups))
    return sorted(found)


def _grouped_text(grouped: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"'{name}' groups={groups}" for name, groups in grouped[:3])
    return shown + (f" and {len(grouped) - 3} more" if len(grouped) > 3 else "")


@contextlib.contextmanager
def _weights_grouped_by_scope(converter: Any) -> Iterator[None]:
    """Make the graph converter write one weight group (own shard files) per name scope.

    Graph models have no layers; a weight's scope is its node name without the last component
    ('.../dense/MatMul/ReadVariableOp' -> '.../dense/MatMul').
    """
    original = converter.extract_weights

    def grouped(*args: Any, **kwargs: Any) -> list[list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for group in original(*args, **kwargs):
            for entry in group:
                groups.setdefault(entry["name"].rpartition("/")[0], []).append(entry)
        return list(groups.values())

    converter.extract_weights = grouped
    try:
        yield
    finally:
        converter.extract_weights = original


# ----------------------------------------------------------------------------- layers
def export_layers(model: ModelRef, spec: TfjsLayersExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Convert the tf_keras model to a TF.js layers model in out_dir, repairing what tfjs-layers lacks."""
    from converter.tf_env import tf

    tf()
    from tensorflowjs.converters import keras_h5_conversion

    keras_model = model.load_keras()
    grouped = _grouped_layers(keras_model)
    if grouped:
        raise ConversionError(f"{model.path}: tfjs-layers has no grouped convolution ({_grouped_text(grouped)}), nor "
                              "has TF.js a kernel for one: export this model as tflite or onnx, or rebuild it with "
                              "groups=1")
    quantization = quantization_map(spec.quantize, spec.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    h5_path = out_dir / "_source.h5"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            keras_model.save(str(h5_path), save_format="h5")
        topology, weight_groups = keras_h5_conversion.h5_merged_saved_model_to_tfjs_format(str(h5_path))
    except Exception as err:  # h5 cannot hold every model (custom objects, non-Keras state)
        raise ConversionError(f"{model.path}: the model cannot be saved as a Keras layers model: {_one_line(err)}") from None
    finally:
        h5_path.unlink(missing_ok=True)
    repairs = repair_topology(topology, keras_model) + repair_layers(topology, weight_groups)
    try:
        with clipped(spec.quantize.range if spec.quantize else "minmax"):
            keras_h5_conversion.write_artifacts(topology, weight_groups, str(out_dir), quantization_dtype_map=quantization,
                                                weight_shard_size_bytes=spec.shard_size, metadata=_metadata(ctx))
    except ValueError as err:
        _raise_quantization_conflict(err, spec.name)
        raise ConversionError(f"{model.path}: the tensorflowjs converter refused the model: {_one_line(err)}") from None
    result = _result(out_dir, spec.quantize, ctx)
    result.notes += repairs
    result.details["repairs"] = repairs
    return result


def repair_topology(topology: dict[str, Any], keras_model: Any) -> list[str]:
    """Rewrite layers tfjs-layers cannot load, in place; return one note per repair.

    GlobalAveragePooling/GlobalMaxPooling 1D/2D with keepdims=True become the pooling layer
    without keepdims followed by a Reshape to the kept shape (tfjs-layers has no keepdims).
    Neither layer has weights, so the weights are untouched.
    """
    return _repair_model_config(topology["model_config"], keras_model)


def _repair_model_config(model_config: dict[str, Any], keras_model: Any) -> list[str]:
    notes: list[str] = []
    config = model_config["config"]
    layers: list[dict[str, Any]] = config["layers"]
    sequential = model_config["class_name"] == "Sequential"
    names = {layer["config"]["name"] for layer in layers}
    for layer in list(layers):
        name = layer["config"]["name"]
        if layer["class_name"] in _NESTED_MODELS:
            notes += _repair_model_config(layer, keras_model.get_layer(name))
        if layer["class_name"] not in KEEPDIMS_POOLING or not layer["config"].get("keepdims"):
            continue
        source = keras_model.get_layer(name)
        kept_shape = list(source.get_output_shape_at(0)[1:])
        reshape_name = unique_name(f"{name}_keepdims", names)
        layer["config"].pop("keepdims")
        reshape = {"class_name": "Reshape", "config": {
            "name": reshape_name, "trainable": layer["config"].get("trainable", True),
            "dtype": layer["config"].get("dtype", "float32"), "target_shape": kept_shape}}
        if not sequential:
            reshape["name"] = reshape_name
            reshape["inbound_nodes"] = [[[name, index, 0, {}]] for index in range(len(layer.get("inbound_nodes", [])))]
            _redirect(config, name, reshape_name, skip=reshape)
        layers.insert(layers.index(layer) + 1, reshape)
        notes.append(f"repaired {layer['class_name']} '{name}' keepdims=True: tfjs-layers has no keepdims, "
                     f"so it is followed by Reshape '{reshape_name}' to {kept_shape}")
    return notes


# tf_keras writes these fields for SeparableConv2D (inherited from Conv), and tfjs-layers refuses them:
# "Fields kernelInitializer, kernelRegularizer and kernelConstraint are invalid for SeparableConv2D".
_SEPARABLE_EXTRA = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
# TFOpLambda ops with one constant operand that tfjs-layers' Rescaling (x * scale + offset) computes exactly
_SCALAR_OPS = {"__operators__.add": lambda c: (1.0, c), "math.add": lambda c: (1.0, c),
               "math.subtract": lambda c: (1.0, -c), "math.multiply": lambda c: (c, 0.0),
               "math.truediv": lambda c: (1.0 / c, 0.0) if c else None}


def repair_layers(topology: dict[str, Any], weight_groups: list[list[dict[str, Any]]]) -> list[str]:
    """Rewrite the layers tfjs-layers 4.22 lacks where an exact equivalent exists, in place (weights included):

    - SeparableConv2D: drop the kernel_* fields tf_keras writes and tfjs-layers refuses (it has depthwise_* and
      pointwise_* fields of its own); the weights do not change.
    - TFOpLambda adding, subtracting, multiplying or dividing by one constant number (`x + 3.0`, `x * (1/6)` in
      MobileNetV3's hard-sigmoid): Rescaling(scale, offset), which computes x * scale + offset.
    - Normalization (a preprocessing layer: (x - mean) / sqrt(variance)) over the last axis: BatchNormalization
      without centre and scale, its moving mean and variance set to the adapted mean and variance, epsilon 0.
    """
    notes: list[str] = []
    taken: set[int] = set()  # ids of the bare statistics weights already given to a Normalization layer
    for config in _model_configs(topology["model_config"]):
        for layer in config["layers"]:
            kind, layer_config = layer["class_name"], layer["config"]
            if kind == "SeparableConv2D" and any(k in layer_config for k in _SEPARABLE_EXTRA):
                for key in _SEPARABLE_EXTRA:
                    layer_config.pop(key, None)
                notes.append(f"repaired SeparableConv2D '{layer_config['name']}': dropped the kernel_initializer, "
                             "kernel_regularizer and kernel_constraint fields tfjs-layers refuses")
            elif kind == "TFOpLambda":
                note = _scalar_op_to_rescaling(layer)
                if note:
                    notes.append(note)
            elif kind == "Normalization":
                found = _given_statistics(layer_config, weight_groups) or \
                    _statistics_group(layer_config["name"], weight_groups, taken)
                note = _normalization_to_batchnorm(layer, found, weight_groups, _input_rank(config))
                if note:
                    notes.append(note)
    return notes


def _model_configs(model_config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    config = model_config["config"]
    yield config
    for layer in config["layers"]:
        if layer["class_name"] in _NESTED_MODELS:
            yield from _model_configs(layer)


def _scalar_op_to_rescaling(layer: dict[str, Any]) -> Optional[str]:
    function = layer["config"].get("function")
    nodes = layer.get("inbound_nodes") or []
    if function not in _SCALAR_OPS or len(nodes) != 1 or not nodes[0]:
        return None
    # TFOpLambda writes its one call as [name, node, tensor, kwargs]; other layers nest it in a list
    inbound = nodes[0] if isinstance(nodes[0][0], str) else nodes[0][0] if len(nodes[0]) == 1 else None
    if inbound is None:
        return None
    kwargs = inbound[3] if len(inbound) > 3 and isinstance(inbound[3], dict) else {}
    constant = kwargs.get("y")
    if isinstance(constant, bool) or not isinstance(constant, (int, float)) or set(kwargs) - {"y", "name"}:
        return None
    factors = _SCALAR_OPS[function](float(constant))
    if factors is None:
        return None
    scale, offset = factors
    name = layer["config"]["name"]
    layer["class_name"] = "Rescaling"
    layer["config"] = {"name": name, "trainable": False, "dtype": layer["config"].get("dtype", "float32"),
                       "scale": scale, "offset": offset}
    layer["inbound_nodes"] = [[[inbound[0], inbound[1], inbound[2], {}]]]
    return f"repaired TFOpLambda '{name}' (tf.{function} by {constant:g}): tfjs-layers has no TFOpLambda, so it is " \
           f"Rescaling(scale={scale:g}, offset={offset:g})"


def _basename(weight: dict[str, Any]) -> str:
    return weight["name"].rsplit("/", 1)[-1].split(":")[0]


_STATISTICS = ("mean", "variance", "count")


def _statistics_group(name: str, weight_groups: list[list[dict[str, Any]]], taken: set[int]) -> dict[str, Any]:
    """The mean/variance/count weights of Normalization layer `name`: named '<name>/mean', or, as tf_keras writes
    them into h5, plainly 'mean', 'variance', 'count' among the other weights: then the next unclaimed three in
    weight order (which follows the layers' order)."""
    weights = [w for group in weight_groups for w in group]
    prefixed = {_basename(w): w for w in weights if w["name"].startswith(f"{name}/") and _basename(w) in _STATISTICS}
    if "mean" in prefixed and "variance" in prefixed:
        return prefixed
    found: dict[str, Any] = {}
    for weight in weights:
        key = weight["name"].split(":")[0]
        if "/" in weight["name"] or id(weight) in taken or key not in _STATISTICS:
            continue
        if key in found:  # a second layer's statistics: this layer's set ended
            break
        found[key] = weight
        if len(found) == len(_STATISTICS):
            break
    if "mean" not in found or "variance" not in found:
        return {}
    taken.update(id(w) for w in found.values())
    return found


def _given_statistics(config: dict[str, Any], weight_groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Statistics given to the constructor (`Normalization(mean=[...], variance=[...])`, as EfficientNetV2 does):
    in the layer's config, not among the weights. They become weights of the first group, one value per channel;
    a single number is left alone (the channel count is not in the config)."""
    import numpy as np

    mean, variance = config.get("mean"), config.get("variance")
    if not isinstance(mean, list) or not isinstance(variance, list) or len(mean) != len(variance):
        return {}
    found = {key: {"name": f"{config['name']}/{key}", "data": np.asarray(value, dtype=np.float32).reshape(-1)}
             for key, value in (("mean", mean), ("variance", variance))}
    if not weight_groups:
        weight_groups.append([])
    weight_groups[0].extend(found.values())
    return found


def _input_rank(config: dict[str, Any]) -> Optional[int]:
    """The rank of the model's input, batch included, when it has exactly one."""
    shapes = [layer["config"].get("batch_input_shape") for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    return len(shapes[0]) if len(shapes) == 1 and shapes[0] else None


def _normalization_to_batchnorm(layer: dict[str, Any], found: dict[str, Any],
                                weight_groups: list[list[dict[str, Any]]], rank: Optional[int] = None) -> Optional[str]:
    """`rank`: the model input's, so that an axis written as a number (EfficientNet's Normalization(axis=3) on its
    images) is known to be the last one."""
    import numpy as np

    config = layer["config"]
    name = config["name"]
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    last = axis == -1 or (isinstance(axis, int) and rank is not None and axis == rank - 1)
    found = {key: found.get(key) for key in ("mean", "variance", "count")}
    if config.get("invert") or not last or found["mean"] is None or found["variance"] is None:
        return None
    mean = np.asarray(found["mean"]["data"], dtype=np.float32).reshape(-1)
    variance = np.asarray(found["variance"]["data"], dtype=np.float32).reshape(-1)
    # Keras divides by max(sqrt(variance), 1e-7); BatchNormalization by sqrt(variance + epsilon)
    variance = np.maximum(variance, np.float32(1e-14))
    found["mean"]["name"], found["mean"]["data"] = f"{name}/moving_mean", mean
    found["variance"]["name"], found["variance"]["data"] = f"{name}/moving_variance", variance
    if found["count"] is not None:
        for group in weight_groups:
            group[:] = [w for w in group if w is not found["count"]]
    layer["class_name"] = "BatchNormalization"
    layer["config"] = {"name": name, "trainable": False, "dtype": config.get("dtype", "float32"), "axis": -1,
                       "momentum": 0.99, "epsilon": 0.0, "center": False, "scale": False}
    return f"repaired Normalization '{name}': tfjs-layers has no Normalization layer, so it is BatchNormalization " \
           "with the adapted mean and variance as moving statistics (same (x - mean) / sqrt(variance))"


def _redirect(config: dict[str, Any], old: str, new: str, skip: dict[str, Any]) -> None:
    """Point every use of layer `old`'s outputs (inbound nodes, model outputs) at layer `new`."""
    for layer in config["layers"]:
        if layer is skip:
            continue
        for node in layer.get("inbound_nodes", []):
            for inbound in node:
                if isinstance(inbound, list) and inbound and inbound[0] == old:
                    inbound[0] = new
    outputs = config.get("output_layers", [])
    for output in outputs if outputs and isinstance(outputs[0], list) else [outputs]:
        if output and output[0] == old:
            output[0] = new




def layers_load_hint(message: str) -> str:
    """What to change when tfjs-layers refuses a layers model: the construct, and the one change that works."""
    import re

    unknown = re.search(r"Unknown layer: ([\w>]+)", message)
    if unknown:
        layer = unknown.group(1)
        what = ("a TensorFlow function called on Keras tensors (tf.* or an operator between tensors), which "
                "tfjs-layers cannot express; the toolkit rewrites only arithmetic with one constant number"
                if layer == "TFOpLambda" else f"a layer tfjs-layers 4.22 does not have (a custom or newer Keras layer)")
        return (f" -- {layer} is {what}. Export the model as tfjs_graph instead: a graph model runs the SavedModel's "
                f"ops, not Keras layers, so it needs no {layer} in TF.js; or rebuild the model without {layer}.")
    fields = re.search(r"Fields? (.+?) (?:is|are) invalid for (\w+)", message)
    if fields:
        return (f" -- tf_keras writes {fields.group(1)} for {fields.group(2)} and tfjs-layers refuses them. Export the "
                "model as tfjs_graph instead (a graph model has no layer configurations).")
    return " -- export the model as tfjs_graph instead, which runs the SavedModel's ops rather than Keras layers."


# ----------------------------------------------------------------------------- shared
def quantization_map(quantize: Optional[Quantize], export_name: str) -> Optional[dict[str, Any]]:
    """tfjs's quantization_dtype_map from the recipe: globs per dtype; a list holding '*' is the fallthrough."""
    if quantize is None:
        return None
    mapping: dict[str, Any] = {}
    for dtype in QUANTIZE_DTYPES:
        globs = getattr(quantize, dtype)
        if globs:
            mapping[dtype] = True if "*" in globs else list(globs)
    everything = [dtype for dtype, value in mapping.items() if value is True]
    if len(everything) > 1:
        raise RecipeError(f"exports.{export_name}.quantize",
                          f"'*' appears under {' and '.join(everything)}: only one dtype may take every weight")
    return mapping or None


def _quantize_here(out_dir: Path, spec: TfjsGraphExport, quantization: dict[str, Any], ctx: ExportContext) -> dict[str, Any]:
    """Quantize the float graph model in out_dir with the kernels `quantize.per_channel` names stored per output
    channel (converter/exports/tfjs_per_channel.py) and, with `quantize.bias_correction`, each kernel's mean
    output shift taken out of its bias (converter/exports/tfjs_bias.py); the weights' dtypes are the ones
    tensorflowjs's map gives."""
    import numpy as np
    from tensorflowjs import quantization as tfjs_quantization

    from converter.exports import tfjs_per_channel

    content = json.loads((out_dir / "model.json").read_text())
    names = [w["name"] for group in content["weightsManifest"] for w in group["weights"] if w["dtype"] == "float32"]
    try:
        mapped = tfjs_quantization.map_layers_to_quantization_dtype(names, quantization or {})
    except ValueError as err:
        _raise_quantization_conflict(err, spec.name)
        raise
    dtypes = {name: np.dtype(dtype).name for name, dtype in mapped.items()}
    shifts, details = (_bias_corrections(out_dir, content, dtypes, spec, ctx) if spec.quantize.bias_correction
                       else ({}, {}))
    with clipped(spec.quantize.range):
        return {**tfjs_per_channel.apply(out_dir, dtypes, spec.quantize.per_channel, spec.shard_size, shifts), **details}


def _bias_corrections(out_dir: Path, content: dict[str, Any], dtypes: dict[str, str], spec: TfjsGraphExport,
                      ctx: ExportContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bias -> shift to subtract, details) of the kernels `dtypes` quantizes, on the calibration data."""
    from converter.exports import tfjs_bias, tfjs_per_channel

    if ctx.calibration is None:
        raise ConversionError(f"exports.{spec.name}.quantize.bias_correction needs calibration data: add data.calibration")
    trailing = tfjs_per_channel.chosen(content, dtypes, spec.quantize.per_channel)
    weights = {e["name"]: e["data"] for group in tfjs_per_channel.read_groups(out_dir, content["weightsManifest"])
               for e in group}

    def restored(name, values):
        return tfjs_per_channel.restored(values, dtypes[name], trailing.get(name, 0), spec.quantize.range)

    shifts, left = tfjs_bias.corrections(out_dir, content, weights, dtypes, restored,
                                         ctx.calibration(spec.quantize.calibration_samples))
    return shifts, {"bias_corrected": len(shifts), "bias_uncorrected": left}


def _raise_quantization_conflict(err: ValueError, export_name: str) -> None:
    if "quantization" in str(err).lower():
        raise RecipeError(f"exports.{export_name}.quantize", _one_line(err)) from None


def _metadata(ctx: ExportContext) -> dict[str, Any]:
    return {"convert": {"build_id": ctx.build_id, "class_names": ctx.class_names}}


def canonical_model_json(out_dir: Path) -> None:
    """Rewrite model.json with its object keys sorted: the converter writes protobuf maps (node attributes) in an
    order that changes from run to run, so the same model would not give the same bytes. Lists, the weight
    manifest among them, keep their order."""
    path = out_dir / "model.json"
    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True))


def _result(out_dir: Path, quantize: Optional[Quantize], ctx: ExportContext) -> ExportResult:
    """Facts about the written model.json: weights, shards, what was quantized, globs that matched nothing."""
    canonical_model_json(out_dir)
    manifest = json.loads((out_dir / "model.json").read_text())["weightsManifest"]
    weights = [w for group in manifest for w in group["weights"]]
    shards = [out_dir / p for group in manifest for p in group["paths"]]
    quantized: dict[str, int] = {}
    for weight in weights:
        if "quantization" in weight:
            dtype = weight["quantization"]["dtype"]
            quantized[dtype] = quantized.get(dtype, 0) + 1
    details: dict[str, Any] = {
        "weights": len(weights), "weight_groups": len(manifest), "shards": len(shards),
        "weight_bytes": sum(p.stat().st_size for p in shards), "quantized": quantized}
    notes: list[str] = []
    if quantize is not None:
        names = [w["name"] for w in weights]
        unmatched = [f"{dtype}:{glob}" for dtype in (*QUANTIZE_DTYPES, "per_channel") for glob in getattr(quantize, dtype)
                     if glob != "*" and not fnmatch.filter(names, glob)]
        if unmatched:
            details["quantize_unmatched"] = unmatched
            message = f"quantize glob(s) matched no weight: {', '.join(unmatched)} (weight names look like '{names[0]}')" if names else \
                f"quantize glob(s) matched no weight: {', '.join(unmatched)}"
            ctx.warn(message)
            notes.append(message)
    return ExportResult(notes=notes, details=details)


def _one_line(err: Any) -> str:
    return " ".join(str(err).split())
