"""Runs a .tflite artifact in the LiteRT interpreter (ai-edge-litert) with its default XNNPACK delegate."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from converter.errors import ConversionError
from converter.runtimes.base import Runtime, TensorInfo

FILENAME = "model.tflite"
_DELEGATE = "DELEGATE"  # the op name of a node a delegate took over


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """q = round(x / scale) + zero_point, rounded half away from zero as TFLite does, clipped to `dtype`."""
    info = np.iinfo(dtype)
    scaled = np.asarray(values, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(values, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class TFLiteRuntime(Runtime):
    """LiteRT interpreter on <artifact>/model.tflite, XNNPACK applied by the default op resolver."""

    backend = "tflite"

    def load(self) -> None:
        """Create the interpreter with explicit threads and allocate its tensors."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        model = self.path / FILENAME if self.path.is_dir() else self.path
        self._threads = self.threads or os.cpu_count() or 1
        self._flex = False
        try:
            self._interpreter = Interpreter(model_path=str(model), num_threads=self._threads,
                                            experimental_op_resolver_type=OpResolverType.AUTO)
            before = self._delegate_nodes()  # the Flex delegate, if any, is applied at construction
            self._interpreter.allocate_tensors()  # the default XNNPACK delegate is applied here
        except (ValueError, RuntimeError) as error:
            if not _needs_flex(error):
                raise ConversionError(f"LiteRT cannot load {model}: {_reason(error)}") from None
            before = self._load_with_flex(model, error)
        self._name_io()
        self._flex_ops = sum(op["op_name"].startswith("Flex") for op in self._interpreter._get_ops_details())
        self._shapes = [tuple(d["shape"]) for d in self._inputs]
        self._xnnpack_partitions = self._delegate_nodes() - before

    def _load_with_flex(self, model, error: Exception) -> int:
        """The model has TF Select ops, for which ai-edge-litert has no kernels: run it in the same TFLite interpreter
        as TensorFlow's pip package builds it, which links the Flex delegate in."""
        try:
            from tensorflow.lite.python.interpreter import Interpreter, OpResolverType

            self._interpreter = Interpreter(model_path=str(model), num_threads=self._threads,
                                            experimental_op_resolver_type=OpResolverType.AUTO)
            before = self._delegate_nodes()
            self._interpreter.allocate_tensors()
        except (ImportError, ValueError, RuntimeError) as flex_error:
            raise ConversionError(f"LiteRT cannot load {model}: {_reason(error)}; TensorFlow's interpreter with the "
                                  f"Flex delegate could not either: {' '.join(str(flex_error).split())[:300]}") from None
        self._flex = True
        return before

    def _delegate_nodes(self) -> int:
        return sum(op["op_name"] == _DELEGATE for op in self._interpreter._get_ops_details())

    def _name_io(self) -> None:
        """Inputs and outputs by the signature's names (the SavedModel's keys), in name order as the TF reference
        has them; a model without exactly one signature keeps the interpreter's order and tensor names."""
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            self._inputs, self._outputs = inputs, outputs
            self.input_names = [d["name"] for d in inputs]
            self.output_names = [d["name"] for d in outputs]
            return
        runner = self._interpreter.get_signature_runner(next(iter(signatures)))
        by_index = {d["index"]: d for d in inputs + outputs}
        named_inputs, named_outputs = runner.get_input_details(), runner.get_output_details()
        self.input_names = sorted(named_inputs)
        self.output_names = sorted(named_outputs)
        self._inputs = [by_index[named_inputs[name]["index"]] for name in self.input_names]
        self._outputs = [by_index[named_outputs[name]["index"]] for name in self.output_names]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run one batch; integer input tensors get quantized inputs, integer outputs come back dequantized."""
        interpreter = self._interpreter
        if len(inputs) != len(self._inputs):
            raise ValueError(f"the model takes {len(self._inputs)} inputs, got {len(inputs)}")
        shapes = [tuple(np.shape(x)) for x in inputs]
        if shapes != self._shapes:
            for detail, shape in zip(self._inputs, shapes):
                interpreter.resize_tensor_input(detail["index"], list(shape))
            interpreter.allocate_tensors()
            self._name_io()
            self._shapes = shapes
        for detail, values in zip(self._inputs, inputs):
            interpreter.set_tensor(detail["index"], _to_input(values, detail))
        interpreter.invoke()
        return [_to_float(interpreter.get_tensor(d["index"]), d) for d in self._outputs]

    def describe(self) -> dict[str, Any]:
        """Backend, LiteRT version and the settings in force (threads, whether XNNPACK took the graph)."""
        from importlib.metadata import version

        settings = {"num_threads": self._threads, "xnnpack": self._xnnpack_partitions > 0,
                    "xnnpack_partitions": self._xnnpack_partitions, "op_resolver": "AUTO"}
        if self._flex_ops:  # TF Select ops ran: LiteRT found the Flex delegate (TensorFlow loaded in this process)
            settings.update(flex_ops=self._flex_ops, flex_delegate=True)
        if self._flex:  # or TensorFlow's build of the same interpreter, which links the Flex delegate in
            return {"backend": self.backend, "runtime": "tensorflow.lite+flex", "version": version("tensorflow"),
                    "settings": settings}
        return {"backend": self.backend, "runtime": "litert", "version": version("ai-edge-litert"), "settings": settings}

    def close(self) -> None:
        self._interpreter = None
        self._debug = None

    # -- intermediate tensors: a second interpreter that keeps every tensor, without delegates ------------
    def _inspector(self):
        """An interpreter with experimental_preserve_all_tensors and no delegate (XNNPACK would hide the tensors
        inside its partitions): the builtin kernels, whose results can differ from XNNPACK's by rounding."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if getattr(self, "_debug", None) is None:
            model = self.path / FILENAME if self.path.is_dir() else self.path
            self._debug = Interpreter(model_path=str(model), num_threads=self._threads,
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                      experimental_preserve_all_tensors=True)
            self._debug.allocate_tensors()
            self._debug_shapes = None
        return self._debug

    def tensors(self) -> list[TensorInfo]:
        """The output tensor of every op, in execution order; constant inputs are its weights."""
        interpreter = self._inspector()
        ops = interpreter._get_ops_details()  # the only reader of op types and operands LiteRT offers
        produced = {t for op in ops for t in op["outputs"]}
        graph_inputs = {d["index"] for d in interpreter.get_input_details()}
        name = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
        result = [TensorInfo(name[i], "input") for i in sorted(graph_inputs)]
        for op in ops:
            live = tuple(name[t] for t in op["inputs"] if t >= 0 and (t in produced or t in graph_inputs))
            constant = tuple(name[t] for t in op["inputs"] if t >= 0 and t not in produced and t not in graph_inputs)
            result += [TensorInfo(name[t], op["op_name"], live, constant) for t in op["outputs"]]
        return result

    def intermediates(self, inputs: list[np.ndarray], names, feeds=None) -> dict[str, np.ndarray]:
        """The named tensors after one invoke of the inspecting interpreter, integer tensors dequantized."""
        if feeds is not None:
            raise NotImplementedError("LiteRT cannot run part of a model on given inputs")
        interpreter = self._inspector()
        details = interpreter.get_input_details()
        shapes = [tuple(np.shape(x)) for x in inputs]
        if shapes != [tuple(d["shape"]) for d in details]:
            for detail, shape in zip(details, shapes):
                interpreter.resize_tensor_input(detail["index"], list(shape))
            interpreter.allocate_tensors()
            details = interpreter.get_input_details()
        for detail, values in zip(details, inputs):
            interpreter.set_tensor(detail["index"], _to_input(values, detail))
        interpreter.invoke()
        by_name = {d["name"]: d for d in interpreter.get_tensor_details()}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"no tensor named {missing[0]!r} in {self.path}")
        return {n: _to_float(interpreter.get_tensor(by_name[n]["index"]), by_name[n]) for n in names}


def _to_input(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    values = np.asarray(values)
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale and values.dtype != dtype:  # same integer dtype: already the model's values
        return quantize(values, scale, zero_point, dtype)
    return values.astype(dtype, copy=False)


def _to_float(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return dequantize(values, scale, zero_point)
    return np.asarray(values, dtype=np.float32).copy()


def _needs_flex(error: Exception) -> bool:
    text = str(error)
    return "Flex" in text or "Select TensorFlow op" in text


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    if "Flex" in text or "Select TensorFlow op" in text:
        return "the model uses TF Select (Flex) ops, which ai-edge-litert has no kernels for"
    return text[:300]

