"""A loaded, preprocessed dataset held in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Dataset:
    x: np.ndarray  # preprocessed inputs, batch first
    y: Optional[np.ndarray]  # integer class labels (N,) or regression targets; None without labels
    class_names: Optional[list[str]]
    description: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int) -> "Dataset":
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.class_names, self.description)
