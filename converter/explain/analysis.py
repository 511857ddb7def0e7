"""One artifact on one backend against the float model it came from: the layer map, each layer's accumulated and
local error, what is unusual about the worst layers, the ranking, the suggestion in recipe terms, and (given a
second backend) where the two backends part."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from converter.explain import layermap, local, rank, suggest, weights
from converter.explain.measure import arrange, compare, sqnr_db
from converter.explain.source import Source

DIVERGENCE_DB = 40.0  # two backends' values of one tensor this far apart differ by more than float rounding
PER_TENSOR_ACTIVATIONS = ("tflite", "onnx")  # formats whose activations are quantized with one scale per tensor
BATCH = 8  # samples per intermediates() call


def explain(source: Source, activations: dict[str, np.ndarray], runtime, x: np.ndarray, fmt: str,
            quantization: str, export: dict[str, Any], artifact: Path,
            tflite_debug: Optional[Callable[[], tuple[bytes, bytes]]] = None, against=None,
            target_db: Optional[float] = None,
            log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    started = time.perf_counter()
    tensors = runtime.tensors()
    wanted = layermap.wanted_tensors(source, tensors)
    log(f"reading {len(wanted)} tensors of the artifact on {len(x)} samples")
    values = read(runtime, x, wanted)
    problems: dict[str, str] = {}
    unsupported: list[str] = []

    def rerun(matches):
        if unsupported:
            return {}
        log(f"re-running {len(matches)} layers on the float model's inputs")
        try:
            return local.rerun(runtime, matches, tensors, activations, x, problems)
        except NotImplementedError as error:
            unsupported.append(str(error))
            return {}

    the_map = layermap.build(source, activations, tensors, values, None if fmt == "tflite" else rerun)
    parts = local.cuts(the_map.matches, tensors)

    record: dict[str, Any] = {"samples": int(len(x)), "source": {"kind": source.kind, "layers": len(source.layers)}}
    record["instrumentation"] = _instrumentation(runtime, x, the_map, source, values)
    if fmt == "tflite":
        local_errors, record["local_method"] = _tflite_local(runtime, the_map, x, quantization, tflite_debug)
    elif unsupported:
        local_errors = {layer: {"error": unsupported[0]} for layer in the_map.matches}
        record["local_method"] = unsupported[0]
    else:
        local_errors = {}
        for layer, match in the_map.matches.items():
            value = the_map.reruns.get(match.tensor)
            local_errors[layer] = (compare(arrange(activations[layer], match.order), value) if value is not None
                                   else {"error": problems.get(layer, "not re-run")})
        record["local_method"] = ("each layer's ops re-run alone on the float model's activations of the tensors "
                                  "they read")

    stored = _weights(fmt, runtime, artifact, parts)
    position = {layer.name: i for i, layer in enumerate(source.layers)}
    kinds = {layer.name: layer.kind for layer in source.layers}
    rows = []
    for layer, match in the_map.matches.items():
        row: dict[str, Any] = {"layer": layer, "kind": kinds[layer], "depth": position[layer], "tensor": match.tensor,
                               "op": _op(parts[layer], match.tensor), "layout": _layout_name(match.order),
                               "matched_by": match.by, "verified_by": match.verified_by,
                               "accumulated": compare(arrange(activations[layer], match.order), values[match.tensor])}
        if match.runner_up:
            row["runner_up"] = {"layer": match.runner_up[0], "sqnr_db": round(match.runner_up[1], 3)}
        found = local_errors.get(layer)
        if found is not None and "error" not in found:
            row["local"] = found
        elif found is not None:
            row["local_error"] = found["error"]
        fused = [name for name, host in the_map.fused.items() if host == layer]
        if fused:
            row["fused"] = fused
        main = _main_weight(parts[layer], stored)
        if main is not None:
            row["weights"] = weights.weight_stats(main, activations[layer].shape[-1] if activations[layer].ndim > 1
                                                  else None, fmt != "onnx")
            row["weights"]["per_tensor_step"] = main.step is not None and np.ndim(main.step) == 0
        row["activation"] = weights.activation_stats(activations[layer])
        rows.append(row)
    _inputs_accumulated(rows, parts, the_map)
    for row in rows:
        row["flags"] = rank.flags(row, fmt in PER_TENSOR_ACTIVATIONS and quantization != "none")
    output = the_map.matches.get(source.outputs[0]) if source.outputs else None
    output_db = next((r["accumulated"]["sqnr_db"] for r in rows if output and r["layer"] == output.layer), None)
    ranking = rank.rank(rows, output_db, target_db if target_db is not None else rank.TARGET_DB)
    for index, layer in enumerate(ranking["ranking"], 1):
        next(r for r in rows if r["layer"] == layer)["rank"] = index
    blamed = ranking["suggested"] or (ranking["worst_fifth"] if ranking["spread"] else [])
    suggestion = _suggestion(fmt, blamed, parts, stored, export, runtime, the_map, tflite_debug)
    if suggestion is not None:
        suggestion["layers"] = blamed
        suggestion["enough"] = ranking["enough"]
        if ranking["spread"]:
            suggestion["text"] = "The worst fifth, to try all the same: `" + suggestion["yaml"] + "`."
    whole = suggest.whole_model(fmt, quantization, export)
    if whole and not ranking["enough"]:
        suggestion = {**(suggestion or {}), "whole": whole}
    record.update(map=the_map.to_json(), layers=rows, ranking=ranking["ranking"][:rank.TOP_ROWS],
                  shares=ranking["shares"], suggested=ranking["suggested"], spread=ranking["spread"],
                  top_fifth_share=ranking["top_fifth_share"], predictions=ranking["predictions"],
                  output_db=ranking["output_db"], target_db=ranking["target_db"], worst_fifth=ranking["worst_fifth"],
                  suggestion=suggestion,
                  verdict=rank.verdict(rows, ranking, suggestion, len(the_map.unmatched)))
    if against is not None:
        log(f"comparing with {against.backend}")
        record["divergence"] = divergence(runtime, against, tensors, values, x, the_map)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def read(runtime, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The named tensors over all samples, in batches (a tensor without the batch dimension, such as a shape,
    from the first batch)."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), BATCH):
        batch = x[start:start + BATCH]
        for name, value in runtime.intermediates([batch], names).items():
            value = np.asarray(value)
            batched = value.ndim > 0 and value.shape[0] == len(batch)
            if batched or start == 0:
                parts.setdefault(name, []).append(value if batched else value[None])
    return {name: np.concatenate(v) if len(v) > 1 else v[0] for name, v in parts.items()}


def _instrumentation(runtime, x, the_map, source: Source, values) -> dict[str, Any]:
    """How far the values read with every tensor kept are from what the runtime computes when deployed: a runtime
    that fuses ops (onnxruntime's QDQ fusion, XNNPACK) computes a little differently once tensors are read."""
    output = source.outputs[0] if source.outputs else None
    match = the_map.matches.get(output)
    if match is None:
        return {"note": "the model's output is not matched: not compared"}
    deployed = np.concatenate([runtime.run([x[s:s + BATCH]])[0] for s in range(0, len(x), BATCH)])
    read_value = values[match.tensor].reshape(deployed.shape) if values[match.tensor].size == deployed.size else None
    if read_value is None:
        return {"note": f"the output tensor {match.tensor} has another shape than run()'s output: not compared"}
    return {"output_sqnr_db": round(sqnr_db(deployed, read_value), 2),
            "note": "SQNR of the output read with the intermediate tensors against the deployed run's output"}


def _tflite_local(runtime, the_map, x, quantization, tflite_debug) -> tuple[dict[str, dict], str]:
    from converter.explain import tflite_debug as debug_module

    if quantization != "int8" or tflite_debug is None:
        why = f"no local error for TFLite '{quantization}': numeric verification covers full-integer int8 only"
        return {layer: {"error": why} for layer in the_map.matches}, why
    debug, calibrated = tflite_debug()
    found = debug_module.local_errors(debug, x, debug_module.artifact_quantization(runtime))
    errors = {}
    for layer, match in the_map.matches.items():
        value = found["layers"].get(match.tensor)
        errors[layer] = value if value is not None else {"error": "not quantized (no numeric verification pair)"}
    method = (f"TFLite numeric verification (QuantizationDebugger's debug model): each quantized op against its "
              f"float twin fed the same dequantized inputs; {found['scales_match']} of {found['scales_compared']} "
              "debug-model tensors carry the artifact's scale and zero point")
    return errors, method


def _weights(fmt: str, runtime, artifact: Path, parts: dict[str, local.Cut]) -> dict[str, weights.Weight]:
    names = {w for part in parts.values() for info in part.inner for w in info.weights}
    if fmt.startswith("tfjs"):
        return {k: v for k, v in weights.read_tfjs(artifact).items() if k in names}
    if fmt == "onnx":
        return weights.read_onnx(runtime._graph(), names)
    if fmt == "tflite":
        return weights.read_tflite(runtime._inspector(), names)
    return {}


def _main_weight(part: local.Cut, stored: dict[str, weights.Weight]) -> Optional[weights.Weight]:
    found = [stored[w] for info in part.inner for w in info.weights if w in stored and stored[w].values.ndim >= 2]
    return max(found, key=lambda w: w.values.size) if found else None


def _op(part: local.Cut, tensor: str) -> str:
    """The op that does the layer's work: the first with weights in its cut, else the one producing the tensor."""
    return next((info.op for info in part.inner if info.weights and info.op not in suggest.ONNX_ADDED),
                next((info.op for info in part.inner if info.name == tensor), ""))


def _layout_name(order: tuple[int, ...]) -> str:
    return "same" if order == tuple(range(len(order))) else "channels first"


def _inputs_accumulated(rows, parts, the_map) -> None:
    """Each row's accumulated SQNR at its inputs (the worst of the matched tensors it reads; 200 dB for the
    model input): local below it means the layer creates error, above it that it inherits."""
    by_tensor = {m.tensor: m.layer for m in the_map.matches.values()}
    accumulated = {r["layer"]: r["accumulated"]["sqnr_db"] for r in rows}
    for row in rows:
        feeds = parts[row["layer"]].feeds
        levels = [accumulated[by_tensor[f]] for f in feeds if f in by_tensor and by_tensor[f] in accumulated]
        row["input_sqnr_db"] = min(levels) if levels else 200.0
        if "local" in row:
            row["creates"] = row["local"]["sqnr_db"] < row["input_sqnr_db"]


def _suggestion(fmt, layers, parts, stored, export, runtime, the_map, tflite_debug) -> Optional[dict[str, Any]]:
    if not layers:
        return None
    if fmt.startswith("tfjs"):
        all_names = [w["name"] for group in _manifest(runtime.path) for w in group["weights"]]
        layer_weights = {layer: [w for info in parts[layer].inner for w in info.weights if w in stored]
                         for layer in layers}
        return suggest.tfjs(layers, layer_weights, {k: v.dtype for k, v in stored.items()}, export.get("quantize"),
                            all_names)
    if fmt == "tflite" and tflite_debug is not None:
        from converter.explain.tflite_debug import denylist_names

        _, calibrated = tflite_debug()
        names = denylist_names(calibrated, [the_map.matches[layer].tensor for layer in layers])
        return suggest.tflite(layers, {layer: names[the_map.matches[layer].tensor] for layer in layers
                                       if the_map.matches[layer].tensor in names}, export.get("keep_float_nodes") or [])
    if fmt == "onnx":
        nodes = {layer: [(info.op, info.node) for info in parts[layer].inner] for layer in layers}
        dynamic = export.get("quantization") == "dynamic_int8"
        return suggest.onnx(layers, nodes, export.get("exclude_nodes") or [], dynamic)
    return None


def _manifest(folder: Path) -> list[dict[str, Any]]:
    import json

    return json.loads((Path(folder) / "model.json").read_text())["weightsManifest"]


def divergence(runtime, other, tensors, values, x, the_map) -> dict[str, Any]:
    """Every float tensor the map reads, in graph order, on both backends: the first whose values differ by more
    than float rounding (SQNR below DIVERGENCE_DB), and the matched layers' SQNR between the two."""
    names = [t.name for t in tensors if t.name in values and np.asarray(values[t.name]).dtype.kind == "f"]
    theirs = read(other, x, names)
    by_tensor = {m.tensor: m.layer for m in the_map.matches.values()}
    first = None
    layers = []
    for name in names:
        level = sqnr_db(theirs[name], values[name])
        if first is None and level < DIVERGENCE_DB:
            first = {"tensor": name, "layer": by_tensor.get(name), "sqnr_db": round(level, 2)}
        if name in by_tensor:
            layers.append({"layer": by_tensor[name], "sqnr_db": round(level, 2)})
    return {"against": other.backend, "threshold_db": DIVERGENCE_DB, "first": first, "layers": layers}
