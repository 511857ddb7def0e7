"""The interface every runtime adapter implements: load, run a batch, describe itself; optionally list and
read the artifact's intermediate tensors (converter/explain/ uses them to localise an error)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of the artifact that `Runtime.intermediates` can read."""

    name: str  # as intermediates() takes it (a TF.js node or layer, a TFLite tensor, an ONNX value name)
    op: str  # the op (or layer class) that produces it; 'input' for the model's inputs
    inputs: tuple[str, ...] = ()  # the tensors it is computed from, constants excluded
    weights: tuple[str, ...] = ()  # its constant inputs (weights), named as the artifact stores them
    node: str = ""  # the producing node's own name, where the format names nodes apart from tensors (ONNX)


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

    # -- optional: intermediate tensors ------------------------------------------------------------
    def tensors(self) -> list[TensorInfo]:
        """Every tensor `intermediates` can read, producers before consumers (after load())."""
        raise NotImplementedError(f"the {self.backend or type(self).__name__} adapter cannot read intermediate tensors")

    def intermediates(self, inputs: list[np.ndarray], names: Sequence[str],
                      feeds: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        """The values of the named tensors for one batch: float tensors as float32; integer tensors dequantized
        where the tensor carries its own scale and zero point (TFLite), else as they are.

        With `feeds` (tensor names, one per array in `inputs`), the arrays are fed in place of those tensors
        and only what lies between them and `names` is computed: one op re-run on given inputs (a feed that is a
        model input takes the layout run() takes). Adapters that cannot cut the graph raise NotImplementedError.
        """
        raise NotImplementedError(f"the {self.backend or type(self).__name__} adapter cannot read intermediate tensors")

    def __enter__(self) -> "Runtime":
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
