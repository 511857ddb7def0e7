"""Measures of sparsity: zero fractions of weights and the gzip size of a model's weights."""
from __future__ import annotations

import gzip
import io
from typing import Sequence

import numpy as np


def zero_fraction(arrays: Sequence[np.ndarray]) -> float:
    """Fraction of exactly-zero elements over all `arrays` (0.0 when they hold no elements)."""
    total = sum(int(np.size(a)) for a in arrays)
    if total == 0:
        return 0.0
    return sum(int(np.size(a) - np.count_nonzero(a)) for a in arrays) / total


def gzip_size(arrays: Sequence[np.ndarray]) -> int:
    """Bytes of the arrays serialised one after another with np.save, then gzip-compressed (level 9)."""
    buffer = io.BytesIO()
    for array in arrays:
        np.save(buffer, np.asarray(array), allow_pickle=False)
    return len(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
