"""Runs an .onnx artifact in onnxruntime on the CPU execution provider."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from converter.errors import ConversionError
from converter.exports.onnx import IO_NAMES_METADATA, NCHW_METADATA
from converter.runtimes.base import Runtime

FILENAME = "model.onnx"
PROVIDER = "CPUExecutionProvider"


class OnnxRuntime(Runtime):
    """onnxruntime InferenceSession on <artifact>/model.onnx: CPU provider, all graph optimizations."""

    backend = "onnxruntime"

    def load(self) -> None:
        """Create the session with explicit intra-op threads (None: onnxruntime's default), one inter-op thread."""
        import onnxruntime as ort

        model = self.path / FILENAME if self.path.is_dir() else self.path
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options = options
        try:
            self._session = ort.InferenceSession(str(model), sess_options=options, providers=[PROVIDER])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            raise ConversionError(f"onnxruntime cannot load {model}: {' '.join(str(error).split())[:300]}") from None
        self._inputs = self._session.get_inputs()
        self._outputs = [o.name for o in self._session.get_outputs()]
        metadata = self._session.get_modelmeta().custom_metadata_map
        self._nchw = {name for name in metadata.get(NCHW_METADATA, "").split(",") if name}
        # tf2onnx names inputs and outputs by the signature's keys; ones the recipe renamed are mapped back
        renamed = json.loads(metadata.get(IO_NAMES_METADATA, "{}") or "{}")
        self.input_names = [renamed.get(i.name, i.name) for i in self._inputs]
        self.output_names = [renamed.get(name, name) for name in self._outputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run one batch; outputs as float32 in the session's output order."""
        if len(inputs) != len(self._inputs):
            raise ValueError(f"the model takes {len(self._inputs)} inputs, got {len(inputs)}")
        feed = {meta.name: self._layout(meta.name, np.asarray(values)).astype(_numpy_type(meta.type), copy=False)
                for meta, values in zip(self._inputs, inputs)}
        return [np.asarray(out, dtype=np.float32) for out in self._session.run(self._outputs, feed)]

    def _layout(self, name: str, values: np.ndarray) -> np.ndarray:
        """Samples are NHWC throughout the toolkit; an input exported as NCHW gets them transposed."""
        if name in self._nchw and values.ndim == 4:
            return np.ascontiguousarray(values.transpose(0, 3, 1, 2))
        return values

    def describe(self) -> dict[str, Any]:
        """Backend, onnxruntime version, providers in use and the session options in force."""
        import onnxruntime as ort

        options = self._options
        return {"backend": self.backend, "runtime": "onnxruntime", "version": ort.__version__,
                "settings": {"providers": self._session.get_providers(),
                             "intra_op_num_threads": options.intra_op_num_threads or "default",
                             "inter_op_num_threads": options.inter_op_num_threads,
                             "nchw_inputs": sorted(self._nchw),
                             "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1]}}

    def close(self) -> None:
        self._session = None


def _numpy_type(onnx_type: str) -> np.dtype:
    """'tensor(float)' -> float32, 'tensor(uint8)' -> uint8, ..."""
    name = onnx_type[len("tensor("):-1] if onnx_type.startswith("tensor(") else onnx_type
    return np.dtype({"float": "float32", "double": "float64"}.get(name, name))
