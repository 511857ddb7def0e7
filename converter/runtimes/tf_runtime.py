"""TensorFlow runtime: a SavedModel signature called directly (no model.predict loop)."""
from __future__ import annotations

from typing import Any

import numpy as np

from converter.runtimes.base import Runtime


class TFRuntime(Runtime):
    backend = "tf"

    def __init__(self, path, threads=None, fmt="savedmodel", signature: str = "serving_default"):
        super().__init__(path, threads, fmt)
        self.signature = signature
        self._fn = None
        self._inputs: list[tuple[str, Any]] = []
        self._outputs: list[str] = []

    def load(self) -> None:
        from converter.tf_env import tf

        tf_ = tf()
        if self.threads:
            try:
                tf_.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf_.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # already initialised in this process: describe() reports what is in force
        self._loaded = tf_.saved_model.load(str(self.path))
        signatures = self._loaded.signatures
        if self.signature not in signatures and len(signatures) == 1:
            self.signature = next(iter(signatures))
        self._fn = signatures[self.signature]
        specs = self._fn.structured_input_signature[1]
        self._inputs = [(name, specs[name].dtype) for name in sorted(specs)]
        self._outputs = sorted(self._fn.structured_outputs)
        self.input_names = [name for name, _ in self._inputs]
        self.output_names = list(self._outputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from converter.tf_env import tf

        feeds = {name: tf().constant(array, dtype=dtype) for (name, dtype), array in zip(self._inputs, inputs)}
        result = self._fn(**feeds)
        return [np.asarray(result[name].numpy(), dtype=np.float32) for name in self._outputs]

    def describe(self) -> dict[str, Any]:
        from converter.tf_env import tf

        tf_ = tf()
        return {"backend": self.backend, "runtime": "tensorflow", "version": tf_.__version__,
                "settings": {"signature": self.signature,
                             "intra_op_threads": tf_.config.threading.get_intra_op_parallelism_threads(),
                             "inter_op_threads": tf_.config.threading.get_inter_op_parallelism_threads()}}
