"""Runs an .onnx artifact in onnxruntime on the CPU execution provider."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from converter.errors import ConversionError
from converter.exports.onnx import IO_NAMES_METADATA, NCHW_METADATA
from converter.runtimes.base import Runtime, TensorInfo

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
        self._parts = {}

    # -- intermediate tensors: a copy of the graph with the wanted tensors as outputs -----------------------
    def _graph(self):
        """The model with inferred value types (loaded once, external data included)."""
        import onnx

        if getattr(self, "_proto", None) is None:
            model = self.path / FILENAME if self.path.is_dir() else self.path
            self._proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
        return self._proto

    def tensors(self) -> list[TensorInfo]:
        """Every node output in graph order (ONNX keeps nodes topologically sorted); initializers, and what is
        computed from them alone (a weight's DequantizeLinear), are weights."""
        graph = self._graph().graph
        constant = {i.name for i in graph.initializer}
        result = [TensorInfo(i.name, "input") for i in graph.input if i.name not in constant]
        for node in graph.node:
            live = tuple(i for i in node.input if i and i not in constant)
            weights = tuple(i for i in node.input if i and i in constant)
            if not live:
                constant.update(node.output)
                continue
            result += [TensorInfo(o, node.op_type, live, weights, node.name) for o in node.output if o]
        return result

    def intermediates(self, inputs: list[np.ndarray], names, feeds=None) -> dict[str, np.ndarray]:
        """Run a copy of the graph whose outputs are `names`; with `feeds`, the part of it between those
        tensors and `names` (onnx.utils.Extractor), with the same session options as run()."""
        import onnxruntime as ort

        key = (tuple(names), tuple(feeds) if feeds is not None else None)
        if not hasattr(self, "_parts"):
            self._parts = {}
        if key not in self._parts:
            proto = self._part(list(names), list(feeds) if feeds is not None else None)
            try:
                self._parts = {key: ort.InferenceSession(proto.SerializeToString(), sess_options=self._options,
                                                          providers=[PROVIDER])}
            except Exception as error:
                raise ConversionError(f"onnxruntime cannot run the part of {self.path} that computes "
                                      f"{', '.join(names)[:200]}: {' '.join(str(error).split())[:300]}") from None
        session = self._parts[key]
        if feeds is None:
            feed = {meta.name: self._layout(meta.name, np.asarray(v)).astype(_numpy_type(meta.type), copy=False)
                    for meta, v in zip(self._inputs, inputs)}
        else:
            types = {meta.name: meta.type for meta in session.get_inputs()}
            feed = {name: self._layout(name, np.asarray(v)).astype(_numpy_type(types[name]), copy=False)
                    for name, v in zip(feeds, inputs)}
        values = session.run(list(names), feed)
        return {name: (np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
                for name, v in zip(names, values)}

    def _part(self, names: list[str], feeds):
        import onnx
        from onnx import helper

        model = self._graph()
        if feeds is not None:
            from onnx.utils import Extractor

            return Extractor(model).extract_model(feeds, names)
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        del copy.graph.output[:]
        for name in names:
            if name not in types:
                raise KeyError(f"no typed tensor named {name!r} in {self.path}")
            copy.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
        return copy


def _numpy_type(onnx_type: str) -> np.dtype:
    """'tensor(float)' -> float32, 'tensor(uint8)' -> uint8, ..."""
    name = onnx_type[len("tensor("):-1] if onnx_type.startswith("tensor(") else onnx_type
    return np.dtype({"float": "float32", "double": "float64"}.get(name, name))
