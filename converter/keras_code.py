"""Does loading this Keras model run code from the file? Decided on what tf_keras will deserialise.

tf_keras rebuilds a model from JSON configs, and a few of them make it run or import Python code:

- `Lambda` layers: their function is Python bytecode (`function_type: lambda`, run through `marshal`) or a
  function looked up by name, possibly in any importable module (`function_type: function`); the same
  for the `*_fn_type` functions of the RNN cell wrappers and `__lambda__` objects of the .keras format;
- a class or function reference whose `module` is not Keras: the .keras loader imports that module;
- a dotted function name (`os.system` looked up inside a Keras module);
- op layers (`TFOpLambda`, `SlicingOpLambda`, `ClassMethod`, `InstanceMethod`, `InstanceProperty`): they
  call a TensorFlow API symbol or an attribute named in the file. A symbol that is a TensorFlow op
  wrapper (tf.math.*, tf.nn.*, tf.reshape, x[...], ...) is the model's own maths; any other symbol
  (tf.io.gfile.*, tf.load_op_library, tf.py_function, file-writing ops, ...) is code.

Where tf_keras reads those configs, and so where they are read here, whatever the file is named:
a folder is a SavedModel (every node of keras_metadata.pb, a SavedMetadata protobuf whose nodes hold JSON;
without it, the Keras metadata of saved_model.pb's user objects); a `.keras` zip is read from config.json;
any other file is HDF5 (the `model_config` and `training_config` attributes). The JSON is parsed with
Python's json module, as tf_keras does, so no spelling of it hides a class. Unknown classes are no code:
tf_keras refuses them in HDF5 and revives them from the SavedModel's graph (TensorFlow ops).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

from converter.errors import ModelError

FUNCTION_KEYS = ("function_type", "output_shape_type", "mask_type")  # Lambda; cell wrappers use *_fn_type
OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")
ATTRIBUTE_LAYERS = ("InstanceMethod", "InstanceProperty")
CLASS_METHOD_SYMBOLS = ("RaggedTensor", "SparseTensor")  # what tf_keras itself records for ClassMethod
KERAS_MODULES = ("keras", "tf_keras")
# Op wrappers that reach outside the model: files, Python callables, summaries, debugging dumps, RPC.
UNSAFE_OP_MODULES = {
    "script_ops", "gen_script_ops", "io_ops", "gen_io_ops", "logging_ops", "gen_logging_ops", "summary_ops_v2",
    "gen_summary_ops", "lookup_ops", "gen_lookup_ops", "gen_checkpoint_ops", "gen_dataset_ops",
    "gen_experimental_dataset_ops", "gen_decode_proto_ops", "debug_ops", "gen_debug_ops", "gen_rpc_ops",
    "gen_filesystem_ops", "collective_ops", "gen_collective_ops"}


# ----------------------------------------------------------------------------- the configs of a file
def keras_configs(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, parsed JSON) for every Keras config tf_keras would read from `path`."""
    try:
        if path.is_dir():
            yield from _savedmodel_configs(path)
        elif path.suffix == ".keras" and zipfile.is_zipfile(path):
            yield from _zip_configs(path)
        else:
            yield from _hdf5_configs(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read {exc.filename or 'the model'} ({exc.strerror or exc})") from None


def _json(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelError(f"{where}: the Keras config is not valid JSON ({str(exc)[:200]})") from None


def _savedmodel_configs(path: Path) -> Iterator[tuple[str, Any]]:
    from google.protobuf.message import DecodeError

    from converter.tf_env import keras

    keras()  # the protobuf classes come with tf_keras and TensorFlow
    metadata = path / "keras_metadata.pb"
    if metadata.exists():
        from tf_keras.protobuf import saved_metadata_pb2

        proto = saved_metadata_pb2.SavedMetadata()
        try:
            proto.ParseFromString(metadata.read_bytes())
        except DecodeError as exc:
            raise ModelError(f"{metadata}: not a Keras metadata protobuf ({exc})") from None
        for node in proto.nodes:
            where = f"keras_metadata.pb node {node.node_path or node.node_id}"
            yield where, _json(node.metadata, where)
        return
    saved_model = path / "saved_model.pb"
    if saved_model.exists():  # SavedModels from before TF 2.5 keep Keras metadata in their user objects
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel()
        try:
            proto.ParseFromString(saved_model.read_bytes())
        except DecodeError as exc:
            raise ModelError(f"{saved_model}: not a SavedModel protobuf ({exc})") from None
        for meta_graph in proto.meta_graphs:
            for node_id, node in enumerate(meta_graph.object_graph_def.nodes):
                if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
                    where = f"saved_model.pb object {node_id}"
                    yield where, _json(node.user_object.metadata, where)


def _zip_configs(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("config.json")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{path}: not a readable .keras file ({exc})") from None
    yield "config.json", _json(text, f"{path} config.json")


def _hdf5_configs(path: Path) -> Iterator[tuple[str, Any]]:
    import h5py

    if not h5py.is_hdf5(path):
        raise ModelError(f"{path}: not an HDF5 file (a Keras .h5/.hdf5 model), nor a .keras zip or a SavedModel folder")
    try:
        with h5py.File(path, "r") as handle:
            attributes = {name: handle.attrs.get(name) for name in ("model_config", "training_config")}
    except OSError as exc:
        raise ModelError(f"{path}: not a readable HDF5 file ({exc})") from None
    if attributes["model_config"] is None:
        raise ModelError(f"{path}: holds weights only, no model; use model.application with weights: {path}")
    for name, raw in attributes.items():
        if raw is not None:
            yield name, _json(raw if isinstance(raw, (str, bytes)) else str(raw), f"{path} {name}")


# ----------------------------------------------------------------------------- code in a config
LAMBDA, FUNCTION, MODULE, SYMBOL = "Lambda layers", "Python functions", "Python modules to import", "TensorFlow calls that are not tensor ops"


def code_in_config(config: Any) -> list[tuple[str, str]]:
    """What in one parsed Keras config would run or import Python code: (kind, description) pairs."""
    found: list[tuple[str, str]] = []
    stack = [config]
    lambda_configs: set[int] = set()  # a Lambda's own function keys are the Lambda, said once
    while stack:  # iterative: a hostile config may be nested deeper than Python's recursion limit
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            found.extend(_code_in_object(value, function_keys=id(value) not in lambda_configs))
            if value.get("class_name") == "Lambda":
                lambda_configs.add(id(value.get("config")))
            stack.extend(value.values())
    return list(dict.fromkeys(found))


def _name(obj: dict[str, Any]) -> str:
    inner = obj.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    name = name or obj.get("name")
    return f" {json.dumps(name)[:80]}" if isinstance(name, str) else ""


def _code_in_object(obj: dict[str, Any], function_keys: bool = True) -> list[tuple[str, str]]:
    found = []
    class_name = obj.get("class_name")
    inner = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    label = f"{str(class_name)[:80]}{_name(obj)}"
    if class_name == "Lambda":
        found.append((LAMBDA, f"{label} holds a Python function (bytecode, or a function looked up by name)"))
    elif class_name == "__lambda__":
        found.append((FUNCTION, "a __lambda__ object holds Python bytecode"))
    for key, value in obj.items():
        if function_keys and isinstance(key, str) and (key in FUNCTION_KEYS or key.endswith("_fn_type")) and value != "raw":
            found.append((FUNCTION, f"{label} stores a Python function ({key[:60]}: {json.dumps(value)[:40]})"))
    module = obj.get("module")
    if class_name is not None and isinstance(module, str) and not _keras_module(module):
        found.append((MODULE, f"{label} names the Python module {module[:80]!r}, which Keras would import"))
    if class_name == "function" and isinstance(obj.get("config"), str) and "." in obj["config"]:
        found.append((FUNCTION, f"the function {obj['config'][:80]!r} is looked up through another module"))
    if class_name in OP_LAYERS:
        symbol = inner.get("function")
        if not (isinstance(symbol, str) and _is_tensor_op(symbol)):
            found.append((SYMBOL, f"{label} calls tf.{str(symbol)[:80]}"))
    elif class_name == "ClassMethod":
        symbol, method = inner.get("cls_symbol"), inner.get("method_name")
        if symbol not in CLASS_METHOD_SYMBOLS or not isinstance(method, str) or method.startswith("_"):
            found.append((SYMBOL, f"{label} calls tf.{str(symbol)[:60]}.{str(method)[:60]}"))
    elif class_name in ATTRIBUTE_LAYERS:
        attribute = inner.get("attr_name")
        if not isinstance(attribute, str) or attribute.startswith("_"):
            found.append((SYMBOL, f"{label} reads the attribute {str(attribute)[:60]!r} of a tensor"))
    return found


def _keras_module(module: str) -> bool:
    return module == "builtins" or any(module == m or module.startswith(m + ".") for m in KERAS_MODULES)


def _is_tensor_op(symbol: str) -> bool:
    """Is tf.<symbol> a TensorFlow op wrapper that stays inside the model (imports TensorFlow)?"""
    if symbol.startswith(("raw_ops.", "compat.v1.raw_ops.")):
        return False
    from converter.tf_env import tf

    tf()
    from tensorflow.python.util import tf_export

    function = tf_export.get_symbol_from_name(symbol)
    module = getattr(function, "__module__", None) or ""
    return (callable(function) and module.startswith("tensorflow.python.ops.")
            and module.rsplit(".", 1)[-1] not in UNSAFE_OP_MODULES)


# ----------------------------------------------------------------------------- the decision
def code_in_model(path: Path) -> list[tuple[str, str]]:
    """Everything in the model at `path` that would run or import Python code when tf_keras loads it:
    (kind, where and what) pairs."""
    found = []
    for where, config in keras_configs(path):
        found.extend((kind, f"{where}: {text}") for kind, text in code_in_config(config))
    return list(dict.fromkeys(found))


def refuse_code(path: Path, trusted: bool) -> None:
    """Raise ModelError when loading `path` would run code from it, unless the recipe trusts it."""
    if trusted:
        return
    found = code_in_model(path)
    if found:
        kinds = " and ".join(sorted({kind for kind, _ in found}))
        more = f"; and {len(found) - 1} more" if len(found) > 1 else ""
        raise ModelError(f"{path}: contains {kinds}, whose Python code would run on load ({found[0][1]}{more}); "
                         "set model.trust_model_code: true only if you trust this file (see docs/security.md)")
