"""Load the recipe's source model into a ModelRef, refusing hidden code unless the recipe trusts it."""
from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from converter.errors import ModelError
from converter.keras_code import refuse_code
from converter.model_ref import ModelRef
from converter.recipe.schema import ModelSpec


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _keras3_version(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
            return str(meta.get("keras_version", ""))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None


def model_fingerprint(path: Path, key: str = "model.path") -> str:
    """Content hash of a model file or folder (store.hash_path), or a ModelError naming the recipe key and
    the entry that cannot be read (an unreadable file in a SavedModel folder, a symbolic link loop)."""
    from converter.store import hash_path

    try:
        return hash_path(Path(path))
    except OSError as exc:
        entry = exc.filename or path
        raise ModelError(f"{key}: cannot read {entry} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def keras_safe_mode(trusted: bool) -> Iterator[None]:
    """tf_keras' own guard, for every kind of file: untrusted, it refuses Lambda bytecode while loading
    (it checks only .keras files by itself). A second line behind keras_code.refuse_code."""
    from converter.tf_env import keras

    keras()
    from tf_keras.src.saving import serialization_lib

    with serialization_lib.SafeModeScope(not trusted):
        yield


@contextlib.contextmanager
def _offline_weights() -> Iterator[None]:
    """Make Keras' weight download look in the cache only, with a clear error when the file is not there."""
    from tf_keras.src.utils import data_utils

    original = data_utils.get_file

    def cached_only(fname=None, origin=None, *args: Any, cache_subdir: str = "datasets", **kwargs: Any) -> str:
        name = fname or Path(str(origin)).name
        target = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / cache_subdir / name
        if not target.exists():
            raise ModelError(f"model.weights: imagenet weights are not in the Keras cache; put {name} at {target} "
                             "(nothing is downloaded), or give weights: <path to the file>")
        return str(target)

    data_utils.get_file = cached_only
    try:
        yield
    finally:
        data_utils.get_file = original


def load_source(spec: ModelSpec, out_dir: Path) -> ModelRef:
    """Materialize the source model. SavedModel folders are used in place; everything else is saved to out_dir.
    With model.input_shape, the model is saved to out_dir re-traced at that shape."""
    ref = _load_source(spec, out_dir)
    if spec.input_shape is None:
        return ref
    return fix_input_shape(ref, spec.input_shape, out_dir)


def load_custom_objects(path: Path) -> dict[str, Any]:
    """The custom objects a recipe's model.custom_objects file defines: its CUSTOM_OBJECTS dict, else every public
    class and function defined in it (trusted code: the recipe says trust_model_code)."""
    import hashlib
    import importlib.util
    import inspect

    name = "convert_custom_objects_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelError(f"model.custom_objects: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's own code: any error is theirs to read
        raise ModelError(f"model.custom_objects: {path} fails to import: {type(exc).__name__}: {exc}") from None
    declared = getattr(module, "CUSTOM_OBJECTS", None)
    if declared is not None:
        if not isinstance(declared, dict):
            raise ModelError(f"model.custom_objects: CUSTOM_OBJECTS in {path} must be a dict of name -> class or function")
        return dict(declared)
    return {key: value for key, value in vars(module).items() if not key.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value)) and getattr(value, "__module__", "") == name}


def _unknown_object_hint(message: str) -> str:
    if "Unknown" in message or "custom_object_scope" in message:
        return (" -- the model uses a custom layer or function: set model.custom_objects to a .py file that defines "
                "it (with model.trust_model_code: true)")
    return ""


def fix_input_shape(ref: ModelRef, input_shape: Any, out_dir: Path) -> ModelRef:
    """Save the model with its serving signature traced at `input_shape` (one shape, or {input name: shape}),
    the batch dimension left open; ModelError naming model.input_shape when it does not fit the model."""
    from converter.tf_env import tf

    tf_ = tf()
    loaded, function = ref.load_signature()
    specs = function.structured_input_signature[1]
    shapes = input_shape if isinstance(input_shape, dict) else (
        {next(iter(specs)): input_shape} if len(specs) == 1 else None)
    if shapes is None:
        raise ModelError(f"model.input_shape: the model has {len(specs)} inputs ({', '.join(sorted(specs))}): "
                         "give {input name: shape} for each")
    unknown = sorted(set(shapes) - set(specs))
    if unknown:
        raise ModelError(f"model.input_shape: the model has no input {', '.join(unknown)} (it has {', '.join(sorted(specs))})")
    fixed = {}
    for name, spec in specs.items():
        shape = [None, *shapes[name]] if name in shapes else spec.shape.as_list()
        if not tf_.TensorShape(shape).is_compatible_with(spec.shape):
            raise ModelError(f"model.input_shape: {shapes[name]} does not fit input '{name}' of shape "
                             f"{['?' if d is None else d for d in spec.shape.as_list()[1:]]}")
        fixed[name] = tf_.TensorSpec(shape, spec.dtype, name=name)

    order = sorted(fixed)
    target = out_dir if Path(ref.path) != out_dir else out_dir.with_name(out_dir.name + "-fixed")
    model = ref.load_keras() if ref.kind == "keras" else None
    if model is not None and _keras_signature(model, specs, function):
        # traced from the Keras model itself: a signature over another object's variables cannot be saved with it

        @tf_.function(input_signature=[fixed[name] for name in order])
        def serve(*args):
            feed = dict(zip(order, args))
            result = model([feed[name] for name in model.input_names] if len(order) > 1 else args[0], training=False)
            return dict(zip(model.output_names, result if isinstance(result, (list, tuple)) else [result]))

        model.save(str(target), save_format="tf", signatures={ref.signature: serve.get_concrete_function()})
    else:

        @tf_.function(input_signature=[fixed[name] for name in order])
        def serve(*args):
            return function(**dict(zip(order, args)))

        tf_.saved_model.save(loaded, str(target), signatures={ref.signature: serve.get_concrete_function()})
        ref = ModelRef(ref.path, "savedmodel", ref.signature, ref.trusted_code)
    if target != out_dir:
        import shutil

        shutil.rmtree(out_dir)
        target.rename(out_dir)
    return ModelRef(out_dir, ref.kind, ref.signature, ref.trusted_code)


def _keras_signature(model: Any, specs: dict[str, Any], function: Any) -> bool:
    """Whether the signature is the Keras model's own: inputs named as its inputs, outputs as its outputs."""
    outputs = function.structured_outputs
    return (sorted(specs) == sorted(model.input_names) and isinstance(outputs, dict)
            and sorted(outputs) == sorted(model.output_names))


def _load_source(spec: ModelSpec, out_dir: Path) -> ModelRef:
    from converter.tf_env import keras

    if spec.application:
        return _build_application(spec, out_dir)
    path = Path(spec.path)
    if not path.is_dir() and path.suffix not in (".h5", ".hdf5", ".keras"):
        raise ModelError(f"{path}: unknown model file; expected a SavedModel folder, .h5, .hdf5 or .keras")
    refuse_code(path, spec.trust_model_code)  # decided on the configs tf_keras reads, whatever the file's name
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path}: not a SavedModel folder (no saved_model.pb)")
        if (path / "keras_metadata.pb").exists():
            return ModelRef(path, "keras", spec.signature, spec.trust_model_code)
        return ModelRef(path, "savedmodel", spec.signature, spec.trust_model_code)
    if path.suffix == ".keras":
        version = _keras3_version(path)
        if version and version.startswith("3"):
            raise ModelError(f"{path}: saved by Keras {version}, which tf_keras (needed for pruning and QAT) cannot "
                             "load; in Keras 3 run model.export('folder') and set model.path to that SavedModel folder")
    custom = load_custom_objects(Path(spec.custom_objects)) if spec.custom_objects else {}
    try:
        kwargs = {"safe_mode": not spec.trust_model_code} if path.suffix == ".keras" and zipfile.is_zipfile(path) else {}
        with keras_safe_mode(spec.trust_model_code), keras().utils.custom_object_scope(custom):
            model = keras().models.load_model(str(path), compile=False, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: tf_keras cannot load it ({first}){_unknown_object_hint(str(exc))}") from None
    model.save(str(out_dir), save_format="tf")
    return ModelRef(out_dir, "keras", "serving_default", spec.trust_model_code)


def _build_application(spec: ModelSpec, out_dir: Path) -> ModelRef:
    from converter.tf_env import keras

    constructor = getattr(keras().applications, spec.application)
    weights: Any = None if spec.weights == "none" else spec.weights
    if weights not in (None, "imagenet"):
        weights_path = Path(weights)
        if not weights_path.exists():
            raise ModelError(f"model.weights: file not found: {weights_path}")
        weights = str(weights_path)
    # Layer names take a suffix per earlier layer of the same kind in the process (global_average_pooling2d_1), and
    # names end up in every artifact: a fresh session makes the artifacts' bytes the same in every process.
    keras().backend.clear_session()
    keras().utils.set_random_seed(spec.seed)  # the initial weights of weights: none are the same in every process
    try:
        with _offline_weights():
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.args.items()}  # YAML lists -> shapes
            model = constructor(weights=weights, **args)
    except ModelError:
        raise
    except (ValueError, TypeError, OSError) as exc:
        raise ModelError(f"model.application {spec.application}: {str(exc).splitlines()[0][:300]}") from None
    model.save(str(out_dir), save_format="tf")
    return ModelRef(out_dir, "keras", "serving_default", spec.trust_model_code)


def io_signature(ref: ModelRef) -> dict[str, Any]:
    """Input and output names, shapes (None for unknown) and dtypes of a model's signature."""
    _, fn = ref.load_signature()
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    return {
        "inputs": [{"name": k, "shape": v.shape.as_list(), "dtype": v.dtype.name} for k, v in sorted(inputs.items())],
        "outputs": [{"name": k, "shape": v.shape.as_list(), "dtype": v.dtype.name} for k, v in sorted(outputs.items())],
    }
