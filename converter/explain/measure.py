"""How far one activation is from another: SQNR in dB and cosine, and the layout that lines them up."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from converter.metrics import snr_db


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """10·log10(Σ reference² / Σ (value − reference)²), capped at ±200 dB (converter.metrics.snr_db)."""
    ref = np.asarray(reference, dtype=np.float64)
    diff = np.asarray(value, dtype=np.float64) - ref
    return snr_db(float(np.sum(ref * ref)), float(np.sum(diff * diff)))


def cosine(reference: np.ndarray, value: np.ndarray) -> float:
    """Mean over samples of the cosine between the flattened per-sample activations (1 where both are zero)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(value, dtype=np.float64).reshape(len(value), -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(out, axis=1) == 0)
    cosines = np.where(norms > 0, np.sum(ref * out, axis=1) / np.where(norms > 0, norms, 1), np.where(both_zero, 1.0, 0.0))
    return float(np.mean(cosines))


def compare(reference: np.ndarray, value: np.ndarray) -> dict[str, float]:
    return {"sqnr_db": round(sqnr_db(reference, value), 3), "cosine": round(cosine(reference, value), 6)}


def layouts(source_shape: Sequence[int], artifact_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The axis orders that turn a source activation (channels last, as Keras and TF keep them) into one of the
    artifact's shape: the identity and/or channels first (ONNX graphs run NCHW inside); both when the shape cannot
    tell (32x32 pixels of 32 channels), none when neither fits."""
    source_shape, artifact_shape = tuple(source_shape), tuple(artifact_shape)
    rank = len(source_shape)
    found = []
    if source_shape == artifact_shape:
        found.append(tuple(range(rank)))
    if rank >= 3:
        first = (0, rank - 1, *range(1, rank - 1))
        if tuple(source_shape[i] for i in first) == artifact_shape and first not in found:
            found.append(first)
    return found


def arrange(values: np.ndarray, order: Optional[Sequence[int]]) -> np.ndarray:
    """`values` (source layout) in the artifact's layout."""
    if order is None or tuple(order) == tuple(range(values.ndim)):
        return values
    return np.ascontiguousarray(values.transpose(order))
