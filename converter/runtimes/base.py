"""The interface every runtime adapter implements: load, run a batch, describe itself."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np


class Runtime(abc.ABC):
    """One runtime executing one artifact.

    `run` takes the model inputs as float32 (or the dataset's dtype) NumPy arrays with a batch
    dimension, in the model's input order, and returns the outputs as float32 NumPy arrays in a
    stable order (the first output is the one metrics use). Quantized integer inputs/outputs are
    quantized/dequantized by the adapter with the model's own scale and zero point.
    """

    backend: str = ""  # 'tf', 'tflite', 'onnxruntime', 'tfjs-cpu', 'tfjs-wasm'

    def __init__(self, path: Path, threads: int | None = None, fmt: str = ""):
        self.path = Path(path)  # the artifact folder
        self.threads = threads  # None: the runtime's default
        self.fmt = fmt  # the artifact's format name (converter.formats.FORMATS)

    @abc.abstractmethod
    def load(self) -> None:
        """Load the artifact; raise converter.errors.ConversionError if the runtime rejects it."""

    @abc.abstractmethod
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run one batch and return the outputs, read back into NumPy."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """{'backend', 'runtime', 'version', 'settings': {...actually in force}}."""

    def close(self) -> None:
        """Release the runtime (processes, sessions)."""

    def __enter__(self) -> "Runtime":
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
