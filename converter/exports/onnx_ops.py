"""TensorFlow ops tf2onnx 1.17 has no handler for, where ONNX has an exact equivalent; registered on import.

- Erfc (the exact GELU, `Activation('gelu')`: 0.5 * x * erfc(-x / sqrt(2)), in ConvNeXt): ONNX has Erf (opset 9),
  so erfc(x) = 1 - erf(x). For large x the difference loses erfc's relative precision below about 1e-7, which
  the GELU multiplies by x: absolute errors of float32 rounding size.
"""
from __future__ import annotations

import numpy as np
from tf2onnx import utils
from tf2onnx.handler import tf_op


@tf_op("Erfc")
class Erfc:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        dtype = ctx.get_dtype(node.output[0])
        node.type = "Erf"
        one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, utils.map_onnx_to_numpy_type(dtype)))
        complement = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"))
        ctx.replace_inputs(complement, [one.output[0], node.output[0]])
        ctx.set_dtype(complement.output[0], dtype)
        ctx.copy_shape(node.output[0], complement.output[0])
