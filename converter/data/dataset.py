"""A loaded, preprocessed dataset held in memory.

`x` is one array for a single-input model, or {input name: array} for a model with several inputs (every array
with the same number of samples, batch first). The helpers below treat both alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

Inputs = Union[np.ndarray, dict[str, np.ndarray]]


def count(x: Inputs) -> int:
    """Number of samples."""
    if isinstance(x, dict):
        return int(next(iter(x.values())).shape[0]) if x else 0
    return int(x.shape[0])


def rows(x: Inputs, index) -> Inputs:
    """The samples at `index` (a slice or an index array) of every input."""
    if isinstance(x, dict):
        return {name: array[index] for name, array in x.items()}
    return x[index]


def feeds(x: Inputs, names: Sequence[str]) -> list[np.ndarray]:
    """The inputs as a list in `names` order (a runtime's input order); a single array is the only input."""
    if not isinstance(x, dict):
        return [x]
    missing = [name for name in names if name not in x]
    if missing:
        raise KeyError(f"no data for input(s) {', '.join(missing)} (the data has {', '.join(x)})")
    return [x[name] for name in names]


def describe(x: Inputs) -> dict[str, dict[str, object]]:
    """{input name or 'x': {'shape': sample shape, 'dtype'}}."""
    arrays = x if isinstance(x, dict) else {"x": x}
    return {name: {"shape": list(a.shape[1:]), "dtype": a.dtype.name} for name, a in arrays.items()}


@dataclass
class Dataset:
    x: Inputs  # preprocessed inputs, batch first: one array, or {input name: array} for several inputs
    y: Optional[np.ndarray]  # integer class labels (N,) or regression targets; None without labels
    class_names: Optional[list[str]]
    description: str

    def __len__(self) -> int:
        return count(self.x)

    def take(self, n: int) -> "Dataset":
        return Dataset(rows(self.x, slice(0, n)), None if self.y is None else self.y[:n], self.class_names,
                       self.description)
