"""TensorFlow runtime: a SavedModel signature called directly (no model.predict loop)."""
from __future__ import annotations

from typing import Any

import numpy as np

from converter.runtimes.base import Runtime, TensorInfo

_NOT_COMPUTED = frozenset({"Const", "NoOp", "Placeholder", "VarHandleOp", "ReadVariableOp"})


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

    # -- intermediate tensors: the signature frozen into one graph, pruned to the wanted tensors -------------
    def _frozen(self):
        """(GraphDef, the wrapped function that imports it) of the signature with variables made constants."""
        from converter.tf_env import tf

        if getattr(self, "_graph_def", None) is None:
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            graph_def = convert_variables_to_constants_v2(self._fn, aggressive_inlining=True).graph.as_graph_def()
            tf_ = tf()
            self._graph_def = graph_def
            self._wrapped = tf_.compat.v1.wrap_function(
                lambda: tf_.compat.v1.import_graph_def(graph_def, name=""), [])
            self._pruned: dict[Any, Any] = {}
        return self._graph_def, self._wrapped

    def tensors(self) -> list[TensorInfo]:
        """Output 0 of every op of the frozen signature graph that computes something, in graph order."""
        graph_def, _ = self._frozen()
        kinds = {node.name: node.op for node in graph_def.node}
        constant = {name for name, op in kinds.items() if op == "Const"}
        result = [TensorInfo(f"{node.name}:0", "input") for node in graph_def.node if node.op == "Placeholder"]
        for node in graph_def.node:
            sources = [i.split(":")[0] for i in node.input if not i.startswith("^")]
            if node.op in _NOT_COMPUTED or (node.op == "Identity" and all(s in constant for s in sources)):
                if node.op == "Identity":
                    constant.add(node.name)
                continue
            live = tuple(f"{s}:0" for s in sources if s not in constant)
            result.append(TensorInfo(f"{node.name}:0", node.op, live, tuple(s for s in sources if s in constant),
                                     node.name))
        return result

    def intermediates(self, inputs: list[np.ndarray], names, feeds=None) -> dict[str, np.ndarray]:
        """The named tensors ('node:0') of the frozen graph, fed the model inputs or, with `feeds`, the given ones."""
        from converter.tf_env import tf

        graph_def, wrapped = self._frozen()
        if feeds is None:
            placeholders = [f"{node.name}:0" for node in graph_def.node if node.op == "Placeholder"]
            if len(placeholders) != len(inputs):
                raise ValueError(f"the frozen graph has {len(placeholders)} inputs, got {len(inputs)} arrays")
            feeds = placeholders
        key = (tuple(feeds), tuple(names))
        if key not in self._pruned:
            graph = wrapped.graph
            self._pruned = {key: wrapped.prune([graph.get_tensor_by_name(n) for n in feeds],
                                               [graph.get_tensor_by_name(n) for n in names])}
        values = self._pruned[key](*[tf().constant(a) for a in inputs])
        return {name: np.asarray(v.numpy(), dtype=np.float32) if v.dtype.is_floating else v.numpy()
                for name, v in zip(names, values)}
