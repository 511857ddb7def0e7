"""Load the recipe's source model into a ModelRef, refusing hidden code unless the recipe trusts it."""
from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from converter.errors import ModelError
from converter.model_ref import ModelRef
from converter.recipe.schema import ModelSpec

CODE_LAYERS = ("Lambda",)


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _layer_classes(config: Any) -> Iterator[str]:
    if isinstance(config, dict):
        if "class_name" in config:
            yield str(config["class_name"])
        for value in config.values():
            yield from _layer_classes(value)
    elif isinstance(config, list):
        for value in config:
            yield from _layer_classes(value)


def _refuse_code(path: Path, classes: Iterator[str] | list[str], spec: ModelSpec) -> None:
    if spec.trust_model_code:
        return
    found = sorted({c for c in classes if c in CODE_LAYERS})
    if found:
        raise ModelError(f"{path}: contains {', '.join(found)} layers, whose Python code would run on load; "
                         "set model.trust_model_code: true if you trust this file")


def _keras3_version(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
            return str(meta.get("keras_version", ""))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None


def _h5_config(path: Path) -> Any:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as exc:
        raise ModelError(f"{path}: not a readable HDF5 file ({exc})") from None
    if raw is None:
        raise ModelError(f"{path}: holds weights only, no model; use model.application with weights: {path}")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _scan(path: Path, spec: ModelSpec) -> None:
    """Refuse Lambda & co. before any loader sees the file."""
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        if meta.exists() and not spec.trust_model_code and b'"class_name": "Lambda"' in meta.read_bytes():
            _refuse_code(path, ["Lambda"], spec)
    elif path.suffix == ".h5":
        _refuse_code(path, _layer_classes(_h5_config(path)), spec)
    elif path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                _refuse_code(path, _layer_classes(json.loads(archive.read("config.json"))), spec)
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable .keras file ({exc})") from None


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
    """Materialize the source model. SavedModel folders are used in place; everything else is saved to out_dir."""
    from converter.tf_env import keras

    if spec.application:
        return _build_application(spec, out_dir)
    path = Path(spec.path)
    _scan(path, spec)
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path}: not a SavedModel folder (no saved_model.pb)")
        if (path / "keras_metadata.pb").exists():
            return ModelRef(path, "keras", spec.signature)
        return ModelRef(path, "savedmodel", spec.signature)
    if path.suffix == ".keras":
        version = _keras3_version(path)
        if version and version.startswith("3"):
            raise ModelError(f"{path}: saved by Keras {version}, which tf_keras (needed for pruning and QAT) cannot "
                             "load; in Keras 3 run model.export('folder') and set model.path to that SavedModel folder")
    if path.suffix not in (".h5", ".hdf5", ".keras"):
        raise ModelError(f"{path}: unknown model file; expected a SavedModel folder, .h5 or .keras")
    try:
        kwargs = {"safe_mode": not spec.trust_model_code} if path.suffix == ".keras" else {}
        model = keras().models.load_model(str(path), compile=False, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: tf_keras cannot load it ({str(exc).splitlines()[0][:300]})") from None
    model.save(str(out_dir), save_format="tf")
    return ModelRef(out_dir, "keras", "serving_default")


def _build_application(spec: ModelSpec, out_dir: Path) -> ModelRef:
    from converter.tf_env import keras

    constructor = getattr(keras().applications, spec.application)
    weights: Any = None if spec.weights == "none" else spec.weights
    if weights not in (None, "imagenet"):
        weights_path = Path(weights)
        if not weights_path.exists():
            raise ModelError(f"model.weights: file not found: {weights_path}")
        weights = str(weights_path)
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
    return ModelRef(out_dir, "keras", "serving_default")


def io_signature(ref: ModelRef) -> dict[str, Any]:
    """Input and output names, shapes (None for unknown) and dtypes of a model's signature."""
    _, fn = ref.load_signature()
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    return {
        "inputs": [{"name": k, "shape": v.shape.as_list(), "dtype": v.dtype.name} for k, v in sorted(inputs.items())],
        "outputs": [{"name": k, "shape": v.shape.as_list(), "dtype": v.dtype.name} for k, v in sorted(outputs.items())],
    }
