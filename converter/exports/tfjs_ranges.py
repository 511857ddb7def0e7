"""The affine range a TF.js uint8 or uint16 weight is stored with.

A TF.js weight stores its own scale and minimum (model.json's `quantization: {min, scale}`; the loader restores
`q * scale + min`), so any range is a legal artifact. tensorflowjs takes the weight's minimum and maximum
('minmax'): one outlier then stretches the step for every other value. 'mse' clips the range to the one that
minimises the weight's mean squared round-trip error: the full range is one of the candidates, so it is never worse
on that measure. Both nudge the range so that zero is stored exactly (pruned zeros stay zeros), as tensorflowjs does.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

RANGES = ("minmax", "mse")
_GRID = np.linspace(0.02, 1.0, 50)  # clip fractions of each side's span tried by the 'mse' range
_ROUNDS = 2  # coordinate-descent rounds over (low side, high side)


def nudged(low: float, high: float, levels: int) -> tuple[float, float]:
    """(scale, min) of tensorflowjs's affine range for [low, high], zero nudged onto the grid when it is inside."""
    scale = (high - low) / levels
    if low <= 0 <= high:
        low = -float(np.round(-low / scale)) * scale
    return scale, low


def quantize(data: np.ndarray, scale: float, low: float, levels: int) -> np.ndarray:
    """The stored integers (as floats) of the values at (scale, min)."""
    return np.clip(np.round((np.asarray(data, dtype=np.float64) - low) / scale), 0, levels)


def roundtrip(data: np.ndarray, scale: float, low: float, levels: int) -> np.ndarray:
    """The values as stored at (scale, min) and restored."""
    return quantize(data, scale, low, levels) * scale + low


def choose(data: np.ndarray, levels: int, method: str) -> tuple[float, float]:
    """(scale, min) for a float weight stored with `levels` steps (255: uint8, 65535: uint16)."""
    values = np.asarray(data, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if method == "minmax" or high == low:
        return nudged(low, high, levels) if high > low else (1.0, low)
    center = 0.0 if low <= 0 <= high else float(np.median(values))

    def error(fraction_low: float, fraction_high: float) -> float:
        lo, hi = center + (low - center) * fraction_low, center + (high - center) * fraction_high
        if hi <= lo:
            return np.inf
        scale, minimum = nudged(lo, hi, levels)
        return float(np.mean((roundtrip(values, scale, minimum, levels) - values) ** 2))

    best = (1.0, 1.0)
    best_error = error(*best)
    for _ in range(_ROUNDS):
        for side in (0, 1):
            for fraction in _GRID:
                trial = (fraction, best[1]) if side == 0 else (best[0], fraction)
                found = error(*trial)
                if found < best_error:
                    best, best_error = trial, found
    lo, hi = center + (low - center) * best[0], center + (high - center) * best[1]
    return nudged(lo, hi, levels)


def stored(data: np.ndarray, dtype: str, method: str) -> np.ndarray:
    """A weight as the artifact restores it at `dtype` with the `method` range (float64)."""
    values = np.asarray(data, dtype=np.float64)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return np.asarray(data, dtype=np.float32).astype(np.float16).astype(np.float64)
    levels = 255 if dtype == "uint8" else 65535
    if values.max() == values.min():
        return values
    scale, low = choose(values, levels, method)
    return roundtrip(values, scale, low, levels)


@contextlib.contextmanager
def clipped(method: str) -> Iterator[None]:
    """tensorflowjs's weight writer, storing uint8 and uint16 weights with the `method` range."""
    if method == "minmax":
        yield
        return
    from tensorflowjs import quantization

    original = quantization.quantize_weights

    def quantize_weights(data, quantization_dtype):
        if quantization_dtype not in (np.uint8, np.uint16) or data.dtype != np.float32 or data.min() == data.max():
            return original(data, quantization_dtype)
        levels = int(np.iinfo(quantization_dtype).max)
        scale, low = choose(data, levels, method)
        return quantize(data, scale, low, levels).astype(quantization_dtype), {"min": low, "scale": scale}

    quantization.quantize_weights = quantize_weights
    try:
        yield
    finally:
        quantization.quantize_weights = original
