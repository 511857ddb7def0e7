"""Inlining nested Sequential/functional sub-models into one flat functional model.

tfmot can neither quantize inside a nested model nor prune inside one called with `training=False` (its
pruning wrappers only step in training mode). Inlining keeps the computation, the weights and any
`training=` argument given to the nested call, which is passed on to the inner layers that take one.
"""
from __future__ import annotations

from typing import Any

from converter.errors import ModelError
from converter.stages.fit import walk_layers


def flatten_nested(model) -> tuple[Any, list[str]]:
    """Return (model with nested Sequential/functional sub-models inlined, names of the inlined models).

    The flat model is rebuilt from fresh layers carrying the same weights, so it shares nothing with `model`.
    """
    from converter.tf_env import keras

    k = keras()
    nested = [layer for layer in model.layers if isinstance(layer, k.Model)]
    if not nested:
        return model, []
    for layer in nested:
        if not (isinstance(layer, k.Sequential) or layer._is_graph_network):
            raise ModelError(f"layer '{layer.name}' is a subclassed model: tfmot cannot reach the layers inside it")
    inputs = [k.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=name)
              for t, name in zip(model.inputs, model.input_names)]
    try:
        outputs = _inline(model, inputs if len(inputs) > 1 else inputs[0], {})
        flat = k.Model(inputs, outputs, name=model.name)
        fresh = k.models.clone_model(flat)
    except ValueError as error:
        raise ModelError(f"cannot inline nested model(s) {', '.join(l.name for l in nested)}: "
                         f"{str(error).splitlines()[0]}") from error
    fresh.set_weights(flat.get_weights())
    inner = [name for name, layer in walk_layers(model) if isinstance(layer, k.Model)]
    return fresh, inner


def _inline(model, inputs, call_kwargs: dict):
    """Call the layers of graph model `model` on `inputs` one by one, inlining nested models recursively."""
    from converter.tf_env import keras, tf

    k, tf_module = keras(), tf()
    usage = model._tensor_usage_count
    tensors: dict[str, list] = {}
    for ref, new in zip(model.inputs, tf_module.nest.flatten(inputs)):
        tensors[str(id(ref))] = [new] * usage[str(id(ref))]
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensors for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            layer = node.layer
            if isinstance(layer, k.Model):
                training = kwargs.get("training", call_kwargs.get("training"))
                outputs = _inline(layer, args[0], {} if training is None else {"training": training})
            else:
                if "training" in call_kwargs and "training" not in kwargs and layer._call_spec.expects_training_arg:
                    kwargs["training"] = call_kwargs["training"]
                outputs = layer(*args, **kwargs)
            for ref_id, tensor in zip(node.flat_output_ids, tf_module.nest.flatten(outputs)):
                tensors[ref_id] = [tensor] * usage[ref_id]
    outputs = [tensors[str(id(ref))].pop() for ref in model.outputs]
    return tf_module.nest.pack_sequence_as(model._nested_outputs, outputs)


def layer_paths(model) -> dict[str, str]:
    """Layer name -> 'outer/inner' path for every layer of `model` that is not itself a model.

    After `flatten_nested` the layers keep their names, so globs may be written against either form.
    """
    from converter.tf_env import keras

    k = keras()
    return {layer.name: path for path, layer in walk_layers(model) if not isinstance(layer, k.Model)}
