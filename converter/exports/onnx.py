"""ONNX export through tf2onnx's Python API, quantized with onnxruntime.quantization.

The SavedModel folder (Keras models included) is frozen by tf2onnx's saved-model loader at the
recipe's signature and converted as the tf2onnx command line does; the BatchNormalizations tf2onnx
leaves unfolded are then folded into their convolutions (see onnx_fold). 'dynamic_int8' is
onnxruntime's quantize_dynamic (int8 weights, activations quantized at run time); 'int8' is static
QDQ with calibration, weights and activations both uint8 (see _quantize_static), the nodes it excludes
rewired to read float tensors (see onnx_float_nodes). Only the final model.onnx (and model.onnx.data with
external data) is written to the artifact folder; the float intermediate lives in a temporary folder.

A quantization-aware-trained model is converted through its FakeQuantWithMinMaxVars nodes, which
tf2onnx turns into QuantizeLinear/DequantizeLinear pairs; its weights, which tf2onnx leaves as float
constants on their trained grid, get explicit uint8 QDQ (see onnx_qat).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from converter.errors import ConversionError
from converter.exports.base import ExportContext, ExportResult
from converter.exports.tflite import is_qat_model
from converter.exports.unsupported_ops import Tf2onnxUnsupportedOps
from converter.model_ref import ModelRef
from converter.recipe.schema import OnnxExport
from converter.suggest import did_you_mean

FILENAME = "model.onnx"
DATA_FILENAME = FILENAME + ".data"
BATCH = "batch"
_PROTOBUF_LIMIT = 2**31 - 64 * 2**20  # a serialized ModelProto must stay under 2 GiB; keep room for the graph
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def export(model: ModelRef, spec: OnnxExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Convert `model` to out_dir/model.onnx as `spec` asks; details describe the graph written."""
    import onnx

    result = ExportResult()
    # tf2onnx's large-model mode (tensors kept out of the protobuf) only where the 2 GiB limit demands it
    large = spec.external_data != "never" and _folder_bytes(Path(model.path)) > _PROTOBUF_LIMIT
    external = large or spec.external_data == "always"
    qat = is_qat_model(model)
    with tempfile.TemporaryDirectory(prefix="convert-onnx-") as tmp:
        float_path = Path(tmp) / FILENAME
        nchw_inputs = _convert(model, spec, float_path, large, result)
        float_model = onnx.load(str(float_path), load_external_data=False)
        if qat:
            _check_qat(float_model)
            _quantize_qat_weights(float_path, large, result)
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / FILENAME
        if spec.quantization == "none":
            _save(onnx.load(str(float_path)), final, external)
        elif qat:
            message = (f"the model is quantization-aware trained: its fake-quant nodes are already QDQ, "
                       f"quantization '{spec.quantization}' with onnxruntime was not applied")
            result.notes.append(message)
            ctx.warn(message)
            _save(onnx.load(str(float_path)), final, external)
        else:
            source = _preprocess(float_path, Path(tmp) / "preprocessed.onnx", external, result) if spec.preprocess else float_path
            _check_exclusions([float_model, onnx.load(str(source), load_external_data=False)], spec)
            if spec.quantization == "dynamic_int8":
                _quantize_dynamic(source, final, spec, external)
            else:
                reader = _calibration_reader(calibration_feed(float_model, _calibration(ctx, spec), nchw_inputs,
                                                              result.details.get("io_names")))
                float_nodes = _quantize_static(source, final, spec, reader, external)
                if float_nodes:
                    result.details["float_nodes"] = float_nodes
    if nchw_inputs:
        _mark_nchw_inputs(final, nchw_inputs)
    if result.details.get("io_names"):
        _mark_nchw_inputs(final, [], {IO_NAMES_METADATA: json.dumps(result.details["io_names"], sort_keys=True)})
    result.details.update(describe_onnx(final))
    result.details.update(quantization=spec.quantization, qat=qat, opset=spec.opset, layout=spec.layout,
                          per_channel=spec.per_channel, external_data=(out_dir / DATA_FILENAME).exists())
    if spec.quantization == "int8" and not qat:
        result.details.update(calibration_method=spec.calibration_method, activation_type="uint8", weight_type="uint8")
    if "ConvInteger" in result.details["ops"]:
        result.notes.append("dynamic int8 turned convolutions into ConvInteger, which onnxruntime runs slowly on CPU and "
                            "which can cost CNNs much accuracy; static 'int8' (QDQ) suits convolutional models")
    return result


# ----------------------------------------------------------------------------- conversion
def _convert(model: ModelRef, spec: OnnxExport, path: Path, large: bool, result: ExportResult) -> list[str]:
    """Write the float ONNX model to `path`; return the names of the inputs transposed to NCHW."""
    from converter.tf_env import tf

    tf()
    import tf2onnx
    from tf2onnx import constants, tf_loader
    from tf2onnx.convert import _convert_common

    from converter.exports import onnx_ops  # noqa: F401  (handlers for ops tf2onnx lacks)

    # tf2onnx names the nodes it inserts from a process-wide counter: start it afresh, so that the same model
    # gives the same bytes whatever this process converted before
    tf2onnx.utils.INTERNAL_NAME = 1
    newest = max(constants.OPSET_TO_IR_VERSION)
    if spec.opset > newest:
        raise ConversionError(f"opset {spec.opset}: tf2onnx {tf2onnx.__version__} converts up to opset {newest}")
    with Tf2onnxUnsupportedOps() as unsupported:
        try:
            graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
                str(model.path), None, None, "serve", [model.signature],
                None, large, return_initialized_tables=True, return_tensors_to_rename=True)
            keys = {t: renames.get(t, t) for t in inputs + outputs}  # the signature's names
            renames.update(_renames(spec.input_names, inputs, renames, "input_names"))
            renames.update(_renames(spec.output_names, outputs, renames, "output_names"))
            renamed = {renames.get(t, t): keys[t] for t in inputs + outputs if renames.get(t, t) != keys[t]}
            nchw = _rank4_inputs(graph_def, inputs) if spec.layout == "nchw" else []
            with _numpy_product_alias(large):
                proto, storage = _convert_common(
                    graph_def, name="convert", opset=spec.opset, input_names=inputs, output_names=outputs,
                    inputs_as_nchw=nchw or None, large_model=large, tensors_to_rename=renames,
                    initialized_tables=tables)
        except ConversionError:
            raise
        except Exception as error:
            if unsupported.ops:
                raise _unsupported_error(unsupported.ops, model) from None
            raise _failed_error(unsupported.failed, error) from None
    if unsupported.ops:
        raise _unsupported_error(unsupported.ops, model)
    if spec.layout == "nchw" and not nchw:
        result.notes.append("layout nchw: the model has no rank-4 input, nothing was transposed")
    _set_batch_dim(proto, spec.dynamic_batch)
    if renamed:  # written into the final model's metadata: runtimes match outputs by the signature's names
        result.details["io_names"] = renamed
    _save_converted(proto, storage, path)
    _fold_batchnorm(path, large, result)
    return [renames.get(name, name) for name in nchw]


def _fold_batchnorm(path: Path, external: bool, result: ExportResult) -> None:
    """Fold into their convolutions the BatchNormalizations tf2onnx left behind (behind no-op Reshapes)."""
    import onnx

    from converter.exports.onnx_fold import fold_batchnorm, tensor_shapes

    if not any(node.op_type == "BatchNormalization" for node in onnx.load(str(path), load_external_data=False).graph.node):
        return
    model = onnx.load(str(path))
    done = fold_batchnorm(model, tensor_shapes(path))
    if done["folded_batchnorms"]:
        _save(model, path, external)
        result.details["folded_batchnorms"] = done["folded_batchnorms"]


def _quantize_qat_weights(path: Path, external: bool, result: ExportResult) -> None:
    """Give the QAT model's weights (float constants on their trained grid) explicit uint8 QDQ (see onnx_qat)."""
    import onnx

    from converter.exports.onnx_qat import quantize_qat_weights

    model = onnx.load(str(path))
    count = quantize_qat_weights(model)
    if count:
        _save(model, path, external)
    result.details["qat_uint8_weights"] = count


@contextmanager
def _numpy_product_alias(needed: bool) -> Iterator[None]:
    """tf2onnx 1.17's large-model path calls np.product, which NumPy 2 removed: alias it to np.prod meanwhile."""
    missing = needed and not hasattr(np, "product")
    if missing:
        np.product = np.prod
    try:
        yield
    finally:
        if missing:
            del np.product


def _renames(names: list[str] | None, tensors: list[str], current: dict[str, str], key: str) -> dict[str, str]:
    """Map graph tensors to the names the recipe gives, in the model's order."""
    if names is None:
        return {}
    if len(names) != len(tensors):
        present = ", ".join(current.get(t, t) for t in tensors)
        raise ConversionError(f"{key}: {len(names)} names given, the model has {len(tensors)} ({present})")
    if len(set(names)) != len(names):
        raise ConversionError(f"{key}: names must be unique, got {names}")
    return dict(zip(tensors, names))


def _rank4_inputs(graph_def, inputs: list[str]) -> list[str]:
    nodes = {node.name: node for node in graph_def.node}
    rank4 = []
    for name in inputs:
        node = nodes.get(name.split(":")[0])
        if node is not None and "shape" in node.attr and len(node.attr["shape"].shape.dim) == 4:
            rank4.append(name)
    return rank4


def _unsupported_error(ops: dict[str, int], model: ModelRef) -> ConversionError:
    listed = ", ".join(f"{op} (x{count})" if count > 1 else op for op, count in sorted(ops.items()))
    hint = ""
    if any(op.startswith("FakeQuant") for op in ops):
        hint = ": tf2onnx cannot convert this quantization-aware trained model's fake-quant nodes"
    if "PartitionedCall" in ops:
        from converter.exports.tfjs import _grouped_text, grouped_convolutions

        grouped = grouped_convolutions(model)
        if grouped:  # the construct first: the op is only how tf_keras runs it
            return ConversionError(
                f"grouped convolutions ({_grouped_text(grouped)}) have no ONNX conversion: tf_keras runs them as "
                f"XLA-compiled functions (PartitionedCall x{ops['PartitionedCall']}) that tf2onnx cannot inline; "
                "export this model as tflite, or rebuild it with groups=1")
    return ConversionError(f"tf2onnx has no ONNX conversion for {listed}{hint}")


def _failed_error(failed: list[tuple[str, str]], error: Exception) -> ConversionError:
    """Name the node tf2onnx failed on; a FakeQuant with an empty range means an untrained QAT model."""
    if not failed:
        return ConversionError(f"tf2onnx failed: {_first_line(error)}")
    node, op = failed[0]
    hint = ""
    if op.startswith("FakeQuant"):
        hint = (" (tf2onnx cannot convert this quantization-aware model's fake-quant node"
                + ("; its range is empty, min == max: train the QAT model before exporting)"
                   if isinstance(error, ZeroDivisionError) else ")"))
    return ConversionError(f"tf2onnx failed on {op} node '{node}': {_first_line(error)}{hint}")


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _set_batch_dim(proto, dynamic: bool) -> None:
    """Make dim 0 of every input (and of outputs batched like them) the symbol 'batch', or 1 when static."""
    fixed = {d.dim_value for d in (i.type.tensor_type.shape.dim[0] for i in proto.graph.input
                                    if i.type.tensor_type.shape.dim) if d.HasField("dim_value")}
    for value, is_input in [(v, True) for v in proto.graph.input] + [(v, False) for v in proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        batch = dims[0]
        symbolic = not batch.HasField("dim_value")
        if not (is_input or symbolic or batch.dim_value in fixed):
            continue
        if dynamic:
            batch.dim_param = BATCH
        elif symbolic:
            batch.dim_value = 1


def _check_qat(float_model) -> None:
    if not any(node.op_type == "QuantizeLinear" for node in float_model.graph.node):
        raise ConversionError("tf2onnx did not turn this quantization-aware trained model's fake-quant nodes into "
                              "QuantizeLinear/DequantizeLinear: the ONNX model would be float")


# ----------------------------------------------------------------------------- saving
NCHW_METADATA = "convert.nchw_inputs"  # inputs transposed to NCHW; runtimes feed them NHWC data transposed
IO_NAMES_METADATA = "convert.io_names"  # {ONNX name: signature key} of the inputs/outputs the recipe renamed


def _mark_nchw_inputs(path: Path, names, more: dict[str, str] | None = None) -> None:
    """Record in the model's metadata which inputs take NCHW, so a runtime can feed NHWC samples (and `more`)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for key, value in ({NCHW_METADATA: ",".join(names)} if names else {}).items() | (more or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _save_converted(proto, storage, path: Path) -> None:
    """Save tf2onnx's result; with external storage, its tensors go into one <name>.data file."""
    import onnx
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    if storage is None:
        onnx.save_model(proto, str(path))
        return
    data_name = path.name + ".data"
    offset = 0
    with open(path.parent / data_name, "wb") as data:
        for tensor in _get_all_tensors(proto):
            if tensor.data_location != TensorProto.EXTERNAL:
                continue
            key = next(e.value for e in tensor.external_data if e.key == "location")
            content = storage.name_to_tensor_data[key]
            data.write(content)
            del tensor.external_data[:]
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(content)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = k, v
            offset += len(content)
    onnx.save_model(proto, str(path))


def _save(proto, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


# ----------------------------------------------------------------------------- quantization
def _check_exclusions(models, spec: OnnxExport) -> None:
    """Refuse exclude_nodes / exclude_op_types that name nothing in the float model or in the one quantize_static
    reads (quant_pre_process fuses nodes under new names: a MatMul and its Add become '.../MatMulAddFusion')."""
    op_types = {node.op_type for model in models for node in model.graph.node}
    node_names = {node.name for model in models for node in model.graph.node}
    for op in spec.exclude_op_types:
        if op not in op_types:
            raise ConversionError(f"exclude_op_types: the model has no '{op}' node{did_you_mean(op, op_types)}")
    for name in spec.exclude_nodes:
        if name not in node_names:
            raise ConversionError(f"exclude_nodes: the model has no node '{name}'{did_you_mean(name, node_names)}")


def _op_types_to_quantize(spec: OnnxExport) -> list[str] | None:
    """Every op type onnxruntime quantizes in this mode, less spec.exclude_op_types (None: all)."""
    from onnxruntime.quantization import registry

    if not spec.exclude_op_types:
        return None
    if spec.quantization == "dynamic_int8":
        known = set(registry.IntegerOpsRegistry)
    else:
        known = set(registry.QLinearOpsRegistry) | set(registry.QDQRegistry)
    return sorted(known - set(spec.exclude_op_types))


def _preprocess(source: Path, target: Path, external: bool, result: ExportResult) -> Path:
    """onnxruntime's quant_pre_process (optimization + shape inference); symbolic shapes only with sympy installed."""
    import importlib.util

    from onnxruntime.quantization.shape_inference import quant_pre_process

    symbolic = importlib.util.find_spec("sympy") is not None
    if not symbolic:
        result.notes.append("quant_pre_process ran without symbolic shape inference (it needs sympy, not installed)")
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=not symbolic, save_as_external_data=external,
                          all_tensors_to_one_file=True, external_data_location=target.name + ".data")
    except Exception as error:
        raise ConversionError(f"onnxruntime quant_pre_process failed ({_first_line(error)}): "
                              "set preprocess: false to quantize the model as converted") from None
    return target


def _quantize_dynamic(source: Path, target: Path, spec: OnnxExport, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=_op_types_to_quantize(spec),
                         per_channel=spec.per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(spec.exclude_nodes) or None, use_external_data_format=external)
    except Exception as error:
        raise ConversionError(f"onnxruntime quantize_dynamic failed: {_first_line(error)}") from None


def _quantize_static(source: Path, target: Path, spec: OnnxExport, reader, external: bool) -> list[str]:
    """Static QDQ with uint8 weights and activations (U8U8); return the excluded nodes rewired to read float
    tensors (see onnx_float_nodes: onnxruntime would quantize them again otherwise).

    onnxruntime runs QDQ convolutions and matrix products on x86 with uint8 activations (int8 ones are
    shifted to uint8). With int8 weights that is its U8S8 kernel, which on CPUs without VNNI (AVX2, and
    AVX-512 without VNNI) adds pairs of u8*s8 products in saturating 16-bit arithmetic: 255*127*2 does
    not fit. The ImageNet MobileNet v1 0.25 quantized with int8 weights scored 45.7 % top-1 on a VNNI CPU
    and 34.8 % on an AVX2 one (float: 45.9 %). uint8 weights take onnxruntime's U8U8 kernels, which do not
    saturate and give bit-identical outputs on both kinds of CPU (44.3 % on both). reduce_range (7-bit
    weights) avoids the overflow too, but scored 39.7 %. See docs/troubleshooting.md.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[spec.calibration_method]
    try:
        quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=_op_types_to_quantize(spec), per_channel=spec.per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        nodes_to_exclude=list(spec.exclude_nodes) or None, use_external_data_format=external,
                        calibrate_method=method)
    except Exception as error:
        raise ConversionError(f"onnxruntime quantize_static failed: {_first_line(error)}") from None
    return _keep_excluded_float(source, target, spec, external)


def _keep_excluded_float(source: Path, target: Path, spec: OnnxExport, external: bool) -> list[str]:
    """Rewire the nodes exclude_nodes / exclude_op_types name to read float tensors, not DequantizeLinear outputs."""
    import onnx

    from converter.exports.onnx_float_nodes import excluded_nodes, keep_float

    if not (spec.exclude_nodes or spec.exclude_op_types):
        return []
    model = onnx.load(str(target))
    names = excluded_nodes(model, spec.exclude_nodes, spec.exclude_op_types)
    rewired = keep_float(model, onnx.load(str(source)), names) if names else []
    if rewired:
        if not external:
            onnx.checker.check_model(model)
        (target.parent / DATA_FILENAME).unlink(missing_ok=True)  # onnx.save appends to an existing data file
        _save(model, target, external)
    return rewired


def _calibration(ctx: ExportContext, spec: OnnxExport):
    from converter.data.dataset import count

    if ctx.calibration is None:
        raise ConversionError("quantization 'int8' needs calibration data: add data.calibration")
    samples = ctx.calibration(spec.calibration_samples)
    if count(samples) == 0:
        raise ConversionError("quantization 'int8': the calibration data is empty")
    return samples


def calibration_feed(model, samples, nchw_inputs: list[str], renamed: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """{input name: samples} in each input's layout and dtype (NHWC transposed for NCHW inputs). `samples` is one
    array for a single-input model, or {signature input name: array}; `renamed` maps ONNX names the recipe gave
    to the signature's."""
    inputs = list(model.graph.input)
    renamed = renamed or {}
    if isinstance(samples, dict):
        missing = [i.name for i in inputs if i.name not in samples and renamed.get(i.name) not in samples]
        if missing:
            raise ConversionError(f"quantization 'int8': the calibration data has no array for input(s) "
                                  f"{', '.join(missing)} (it has {', '.join(samples)}): map them in the data's x_keys")
        arrays = {i.name: samples[i.name] if i.name in samples else samples[renamed[i.name]] for i in inputs}
    elif len(inputs) != 1:
        raise ConversionError(f"quantization 'int8': the model has {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}) and the calibration data one array: use source "
                              "'arrays' with x_keys mapping each input name to an array of the .npz")
    else:
        arrays = {inputs[0].name: samples}
    feed = {}
    for value in inputs:
        array = arrays[value.name]
        if value.name in nchw_inputs and array.ndim == 4:
            array = array.transpose(0, 3, 1, 2)
        feed[value.name] = np.ascontiguousarray(array.astype(_numpy_dtype(value.type.tensor_type.elem_type), copy=False))
    return feed


def _calibration_reader(feed: dict[str, np.ndarray]):
    """An onnxruntime CalibrationDataReader yielding one-sample batches of every input."""
    from onnxruntime.quantization import CalibrationDataReader

    count = len(next(iter(feed.values())))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            index = next(self._indexes, None)
            return None if index is None else {name: array[index:index + 1] for name, array in feed.items()}

        def rewind(self) -> None:
            self._indexes = iter(range(count))

    return Reader()


def _numpy_dtype(elem_type: int) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


# ----------------------------------------------------------------------------- description
def describe_onnx(path: Path) -> dict[str, Any]:
    """Facts about an ONNX file: op-type counts (QDQ included), weight dtypes, inputs/outputs, opset, size."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    files = [path] + ([path.parent / DATA_FILENAME] if (path.parent / DATA_FILENAME).exists() else [])
    return {
        "size_bytes": sum(f.stat().st_size for f in files),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ops": dict(sorted(ops.items())),
        "qdq_nodes": {op: ops.get(op, 0) for op in _QDQ},
        "weight_dtypes": dict(sorted(Counter(_numpy_dtype(t.data_type).name for t in model.graph.initializer).items())),
        "inputs": [_value_detail(v) for v in model.graph.input],
        "outputs": [_value_detail(v) for v in model.graph.output],
    }


def _value_detail(value) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_param if not d.HasField("dim_value") else int(d.dim_value) for d in tensor.shape.dim]
    return {"name": value.name, "dtype": _numpy_dtype(tensor.elem_type).name, "shape": shape}
