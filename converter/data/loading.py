"""Load a recipe dataset: image folder, .npy/.npz arrays, scikit-learn digits or synthetic input."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from converter.data.dataset import Dataset, Inputs
from converter.data.preprocess import finish, resize_array, resize_image
from converter.errors import DataError
from converter.recipe.schema import DatasetSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def select(count: int, spec: DatasetSpec) -> np.ndarray:
    """Deterministic indexes of the samples this spec keeps (split, then limit)."""
    if spec.split == "all" and spec.limit is None:
        return np.arange(count)
    order = np.random.default_rng(spec.seed).permutation(count)
    n_test = int(round(count * spec.test_fraction))
    if spec.split == "test":
        order = order[:n_test]
    elif spec.split == "train":
        order = order[n_test:]
    if spec.limit is not None:
        order = order[: spec.limit]
    return np.sort(order) if spec.split == "all" else order


def folder_files(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files, their labels (sorted class-folder index, as Keras does) and the class names."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected one folder per class)")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files.extend(found)
        labels.extend([index] * len(found))
    if not files:
        raise DataError(f"{root}: no images found in its class folders")
    return files, np.asarray(labels, dtype=np.int64), classes


def _read_image(path: Path, spec: DatasetSpec) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("L" if spec.preprocess.channels == "gray" else "RGB")
            return np.asarray(resize_image(image, spec.preprocess), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def _load_folder(spec: DatasetSpec) -> Dataset:
    files, labels, classes = folder_files(spec.path)
    keep = select(len(files), spec)
    images = [_read_image(files[i], spec) for i in keep]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{spec.path}: images differ in size {sorted(shapes)[:3]}; set preprocess.resize")
    x = finish(np.stack(images), spec.preprocess, image_like=True)
    return Dataset(x, labels[keep], classes, f"folder {spec.path} ({len(keep)} images)")


def _load_arrays(spec: DatasetSpec) -> Dataset:
    path = spec.path
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = spec.x_keys or {"": spec.x_key}
                for key in keys.values():
                    if key not in archive:
                        which = "x_keys" if spec.x_keys else "x_key"
                        raise DataError(f"{path}: no array '{key}' (has {', '.join(archive.files)}); set {which}")
                y = archive[spec.y_key] if spec.y_key and spec.y_key in archive else None
                if spec.x_keys:
                    return _from_several(spec, {name: archive[key] for name, key in spec.x_keys.items()}, y)
                x = archive[spec.x_key]
        else:
            x = np.load(path, allow_pickle=False)
            y = np.load(spec.labels_path, allow_pickle=False) if spec.labels_path else None
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read arrays ({exc})") from None
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path}: holds no samples")
    if y is not None and len(y) != len(x):
        raise DataError(f"{spec.labels_path or path}: {len(y)} labels for {len(x)} samples")
    return _from_arrays(x, y, None, spec, f"arrays {path.name}")


def _from_several(spec: DatasetSpec, arrays: dict[str, np.ndarray], y: Optional[np.ndarray]) -> Dataset:
    """Several model inputs from one .npz: the same samples of every array, each preprocessed only when image-like
    (rank 3 or more); token ids and masks keep their integer dtype."""
    counts = {name: len(a) if a.ndim else 0 for name, a in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise DataError(f"{spec.path}: the x_keys arrays must hold the same number of samples, "
                        f"got {', '.join(f'{n}: {c}' for n, c in counts.items())}")
    total = next(iter(counts.values()))
    if y is not None and len(y) != total:
        raise DataError(f"{spec.path}: {len(y)} labels for {total} samples")
    keep = select(total, spec)
    x: dict[str, np.ndarray] = {}
    for name, array in sorted(arrays.items()):
        array = array[keep]
        if array.ndim >= 3:
            if spec.preprocess.resize is not None:
                array = np.stack([resize_array(sample, spec.preprocess) for sample in array])
            array = finish(array, spec.preprocess, image_like=True)
        elif np.issubdtype(array.dtype, np.floating):
            array = np.ascontiguousarray(array, dtype=np.float32)
        x[name] = array
    return Dataset(x, None if y is None else y[keep], None,
                   f"arrays {spec.path.name} ({', '.join(sorted(arrays))}; {len(keep)} samples)")


def _from_arrays(x: np.ndarray, y: Optional[np.ndarray], names: Optional[list[str]], spec: DatasetSpec, what: str) -> Dataset:
    keep = select(len(x), spec)
    x, y = x[keep], None if y is None else y[keep]
    image_like = x.ndim >= 3
    if not image_like and np.issubdtype(x.dtype, np.integer) and spec.preprocess == type(spec.preprocess)():
        return Dataset(np.ascontiguousarray(x), y, names, f"{what} ({len(keep)} samples)")  # token ids stay integers
    if image_like and spec.preprocess.resize is not None:
        x = np.stack([resize_array(sample, spec.preprocess) for sample in x])
    return Dataset(finish(x, spec.preprocess, image_like), y, names, f"{what} ({len(keep)} samples)")


def _load_digits(spec: DatasetSpec) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _from_arrays(digits.images.astype(np.float32), digits.target.astype(np.int64),
                        [str(i) for i in range(10)], spec, "scikit-learn digits")


def _load_synthetic(spec: DatasetSpec, model_inputs: Optional[Sequence[dict]]) -> Dataset:
    """Seeded random inputs: one array of `shape`, or one per model input (its shape and dtype): floats from a
    standard normal, integers (token ids, masks) uniform in `int_range`, booleans at random."""
    rng = np.random.default_rng(spec.seed)
    if spec.shape is not None:
        if model_inputs is not None and len(model_inputs) > 1:
            raise DataError(f"synthetic data: 'shape' describes one input, the model has {len(model_inputs)} "
                            f"({', '.join(i['name'] for i in model_inputs)}); drop 'shape' to draw each input "
                            "from its own shape (model.input_shape fixes the dimensions the model leaves open)")
        dtype = model_inputs[0]["dtype"] if model_inputs else "float32"
        inputs = [{"name": "x", "shape": [None, *spec.shape], "dtype": dtype}]
    elif model_inputs:
        inputs = list(model_inputs)
    else:
        raise DataError("synthetic data needs 'shape' (no model input shape is known)")
    arrays: dict[str, np.ndarray] = {}
    for item in inputs:
        shape = list(item["shape"][1:])
        if any(d is None or d <= 0 for d in shape):
            shown = ["?" if d is None else d for d in shape]
            raise DataError(f"synthetic data: the model input '{item['name']}' has no fixed shape ({shown}): declare "
                            "one with model.input_shape (e.g. [224, 224, 3]), or give the data's 'shape'")
        arrays[item["name"]] = _random(rng, (spec.count, *shape), item.get("dtype", "float32"), spec.int_range)
    warnings.warn("synthetic random input: calibration and accuracy figures on it are meaningless")
    x: Inputs = arrays if len(arrays) > 1 else next(iter(arrays.values()))
    described = ", ".join(f"{name} {list(a.shape[1:])} {a.dtype.name}" for name, a in arrays.items())
    return Dataset(x, None, None, f"synthetic {described} x {spec.count}")


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, int_range: Sequence[int]) -> np.ndarray:
    kind = np.dtype(dtype if dtype != "bool" else np.bool_)
    if kind == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        low, high = max(int_range[0], int(info.min)), min(int_range[1], int(info.max) + 1)
        return rng.integers(low, high, shape).astype(kind)
    return rng.standard_normal(shape).astype(np.float32 if kind.itemsize >= 4 else kind)


def load_dataset(spec: DatasetSpec, model_inputs: Optional[Sequence[dict]] = None) -> Dataset:
    """Load and preprocess one dataset; DataError names the file at fault. `model_inputs` ({name, shape with batch,
    dtype} per input, as converter.sources.io_signature gives them) shape synthetic data."""
    if spec.source == "folder":
        dataset = _load_folder(spec)
    elif spec.source == "arrays":
        dataset = _load_arrays(spec)
    elif spec.source == "digits":
        dataset = _load_digits(spec)
    else:
        dataset = _load_synthetic(spec, model_inputs)
    if len(dataset) == 0:
        raise DataError(f"{spec.path or spec.source}: no samples left after split '{spec.split}' and limit")
    return dataset


def check_shape(dataset: Dataset, input_shape: Sequence[Optional[int]], where: str) -> None:
    """DataError when samples cannot feed a model input of shape (without batch) `input_shape`."""
    _check_one(dataset.x, input_shape, where, "")


def _check_one(x: np.ndarray, input_shape: Sequence[Optional[int]], where: str, name: str) -> None:
    sample = x.shape[1:]
    ok = len(sample) == len(input_shape) and all(m is None or m == s for m, s in zip(input_shape, sample))
    if not ok:
        which = f" '{name}'" if name else ""
        raise DataError(f"{where}: samples of shape {list(sample)} do not fit the model input{which} "
                        f"{['?' if d is None else d for d in input_shape]}; check preprocess.resize and channels")


def check_inputs(dataset: Dataset, model_inputs: Sequence[dict], where: str) -> None:
    """DataError when the data cannot feed the model's inputs ({name, shape with batch, dtype} each): one array for
    a single-input model, and for several inputs one array per input name (data x_keys)."""
    names = [i["name"] for i in model_inputs]
    if not isinstance(dataset.x, dict):
        if len(model_inputs) != 1:
            raise DataError(f"{where}: the model has {len(names)} inputs ({', '.join(names)}) and the data one array: "
                            f"use source 'arrays' with an .npz and x_keys mapping each input name to an array, "
                            f"e.g. x_keys: {{{', '.join(f'{n}: {n}' for n in names)}}}")
        _check_one(dataset.x, model_inputs[0]["shape"][1:], where, "")
        return
    missing = [n for n in names if n not in dataset.x]
    extra = [n for n in dataset.x if n not in names]
    if missing or extra:
        raise DataError(f"{where}: x_keys names {', '.join(sorted(dataset.x))}, the model's inputs are "
                        f"{', '.join(names)}" + (f" (no data for {', '.join(missing)})" if missing else "")
                        + (f" (no input named {', '.join(extra)})" if extra else ""))
    for item in model_inputs:
        _check_one(dataset.x[item["name"]], item["shape"][1:], where, item["name"])


def fingerprint(spec: DatasetSpec) -> str:
    """Hash of the dataset's spec (without where its files are) and of its files' names and contents, for cache
    ids; memoized per process by spec, file sizes and modification times."""
    try:
        return _fingerprint(spec)
    except OSError as exc:
        raise DataError(f"{exc.filename or spec.path}: cannot read ({exc.strerror or exc})") from None


def _fingerprint(spec: DatasetSpec) -> str:
    paths: list[Path] = []
    if spec.source == "folder":
        paths = sorted(p for p in spec.path.rglob("*") if p.is_file())
    elif spec.source == "arrays":
        paths = [spec.path] + ([spec.labels_path] if spec.labels_path else [])
    described = spec.model_dump(mode="json", exclude={"path", "labels_path"})
    key = json.dumps([spec.model_dump(mode="json"), [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]],
                     sort_keys=True)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
        for path in paths:
            digest.update(str(path.relative_to(spec.path) if spec.source == "folder" else path.name).encode())
            digest.update(path.read_bytes())
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[str, str] = {}
