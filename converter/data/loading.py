"""Load a recipe dataset: image folder, .npy/.npz arrays, scikit-learn digits or synthetic input."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from converter.data.dataset import Dataset
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
                if spec.x_key not in archive:
                    raise DataError(f"{path}: no array '{spec.x_key}' (has {', '.join(archive.files)}); set x_key")
                x = archive[spec.x_key]
                y = archive[spec.y_key] if spec.y_key and spec.y_key in archive else None
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


def _from_arrays(x: np.ndarray, y: Optional[np.ndarray], names: Optional[list[str]], spec: DatasetSpec, what: str) -> Dataset:
    keep = select(len(x), spec)
    x, y = x[keep], None if y is None else y[keep]
    image_like = x.ndim >= 3
    if image_like and spec.preprocess.resize is not None:
        x = np.stack([resize_array(sample, spec.preprocess) for sample in x])
    return Dataset(finish(x, spec.preprocess, image_like), y, names, f"{what} ({len(keep)} samples)")


def _load_digits(spec: DatasetSpec) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _from_arrays(digits.images.astype(np.float32), digits.target.astype(np.int64),
                        [str(i) for i in range(10)], spec, "scikit-learn digits")


def _load_synthetic(spec: DatasetSpec, input_shape: Optional[Sequence[int]]) -> Dataset:
    shape = spec.shape or (list(input_shape) if input_shape else None)
    if not shape or any(d is None or d <= 0 for d in shape):
        raise DataError("synthetic data needs 'shape' (the model input has no fixed shape)")
    warnings.warn("synthetic random input: calibration and accuracy figures on it are meaningless")
    x = np.random.default_rng(spec.seed).standard_normal((spec.count, *shape)).astype(np.float32)
    return Dataset(x, None, None, f"synthetic {shape} x {spec.count}")


def load_dataset(spec: DatasetSpec, input_shape: Optional[Sequence[int]] = None) -> Dataset:
    """Load and preprocess one dataset; DataError names the file at fault."""
    if spec.source == "folder":
        dataset = _load_folder(spec)
    elif spec.source == "arrays":
        dataset = _load_arrays(spec)
    elif spec.source == "digits":
        dataset = _load_digits(spec)
    else:
        dataset = _load_synthetic(spec, input_shape)
    if len(dataset) == 0:
        raise DataError(f"{spec.path or spec.source}: no samples left after split '{spec.split}' and limit")
    return dataset


def check_shape(dataset: Dataset, input_shape: Sequence[Optional[int]], where: str) -> None:
    """DataError when samples cannot feed a model input of shape (without batch) `input_shape`."""
    sample = dataset.x.shape[1:]
    ok = len(sample) == len(input_shape) and all(m is None or m == s for m, s in zip(input_shape, sample))
    if not ok:
        raise DataError(f"{where}: samples of shape {list(sample)} do not fit the model input "
                        f"{['?' if d is None else d for d in input_shape]}; check preprocess.resize and channels")


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
