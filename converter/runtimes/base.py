"""The interface every runtime adapter implements: load, run a batch, describe itself."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np


class Runtime(abc.ABC):
    """One runtime executing one artifact.

    `run` takes the model inputs as NumPy arrays with a batch dimension, in `input_names` order, and
    returns the outputs as float32 NumPy arrays in `output_names` order. After `load`, both lists name
    the inputs and outputs as the source SavedModel signature does (its keys), wherever the artifact
    lets the adapter tell; a name it cannot tell is the artifact's own. Callers match outputs by
    these names, never by position. Quantized integer inputs/outputs are quantized/dequantized by
    the adapter with the model's own scale and zero point.
    """

    backend: str = ""  # 'tf', 'tflite', 'onnxruntime', 'tfjs-cpu', 'tfjs-wasm'
    input_names: list[str] = []  # set by load(): run()'s input order
    output_names: list[str] = []  # set by load(): run()'s output order

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
