"""The layer map: each source layer matched to the artifact tensor that holds its output, verified on activations.

1. Names propose: a tensor's candidates are the layers its name speaks of (converter.explain.names), plus the
   layers right after and right before them that no tensor speaks of (a TF.js 'conv/depthwise' node computes the
   convolution, its batch norm and its ReLU: its output is the ReLU's; an ONNX QDQ convolution named after the
   ReLU6 the quantizer folded into its output's range holds the batch norm's values).
2. Activations decide: among the candidates whose shape fits (channels last, or channels first as in ONNX graphs),
   the one the tensor is closest to (highest SQNR); a layer claimed by several tensors (an ONNX activation before
   and after its QuantizeLinear/DequantizeLinear pair) keeps the last of them, the value later ops read.
3. Verified against the neighbours: a match is rejected, not guessed, when the tensor is closer to a layer just
   before or after it than to its own. Where the runtime can re-run part of its graph, steps 2 and 3 use each
   tensor's ops re-run on the float model's inputs (converter.explain.local), whose values are close to the float
   model's even when the artifact's own activations have collapsed; otherwise the artifact's activations, and a
   match too noisy to tell from its neighbour (below NOISY_DB, within MARGIN_DB) is reported, not kept.
Layers between two matched layers are computed inside the later one's ops ('fused'); a layer whose values repeat
its input ('identity': Dropout) needs no tensor; anything else is reported as not found, with the reason.
The model's output is matched by position when no name speaks of it (TFLite calls it 'StatefulPartitionedCall:0').
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from converter.explain import names as naming
from converter.explain.measure import arrange, layouts, sqnr_db
from converter.explain.source import Source
from converter.runtimes.base import TensorInfo

MARGIN_DB = 0.5  # a neighbour this much closer to the tensor than its own layer rejects the match
NOISY_DB = 10.0  # below this, artifact activations cannot tell neighbouring layers apart


@dataclass
class Match:
    layer: str
    tensor: str
    order: tuple[int, ...]  # source layout -> artifact layout
    score_db: float  # SQNR of the values that decided the match against the layer's float activation
    runner_up: Optional[tuple[str, float]] = None  # the next closest candidate or neighbour, and its SQNR
    also: list[str] = field(default_factory=list)  # other tensors holding the same layer's value
    by: str = "name"  # 'name' or 'position' (the model's output)
    verified_by: str = ""  # 're-run' (its ops re-run on float inputs) or 'activations' (the artifact's own)


@dataclass
class LayerMap:
    matches: dict[str, Match]  # layer -> match, in source order
    fused: dict[str, str]  # layer -> the matched layer whose ops compute it
    identity: dict[str, str]  # layer -> the layer whose values it passes on
    unmatched: dict[str, str]  # layer -> why
    reruns: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> its ops re-run on float inputs

    def to_json(self) -> dict:
        return {"matched": len(self.matches), "fused": self.fused, "identity": self.identity,
                "unmatched": [{"layer": k, "reason": v} for k, v in self.unmatched.items()],
                "verified_by_rerun": sum(m.verified_by == "re-run" for m in self.matches.values())}


def wanted_tensors(source: Source, tensors: list[TensorInfo]) -> list[str]:
    """The artifact tensors worth reading to build the map: those whose name speaks of a layer, and the sinks."""
    keys = {layer.name: layer.key for layer in source.layers}
    read = {i for t in tensors for i in t.inputs}
    return [t.name for t in tensors if t.op != "input" and (naming.mentioned(t.name, keys) or t.name not in read)]


Rerun = Callable[[dict[str, "Match"]], dict[str, np.ndarray]]


def build(source: Source, activations: dict[str, np.ndarray], tensors: list[TensorInfo],
          values: dict[str, np.ndarray], rerun: Optional[Rerun] = None) -> LayerMap:
    """The map; `rerun(matches)` returns each matched tensor re-run on float inputs (None: the runtime cannot)."""
    candidates = _candidates(source, tensors, values, activations)
    order_of = {t.name: i for i, t in enumerate(tensors)}
    prefer = _preferred_layouts(candidates, values, activations)
    matches = _assign(candidates, values, activations, order_of, prefer)
    _match_output(source, tensors, values, activations, matches)
    unmatched: dict[str, str] = {}
    reruns: dict[str, np.ndarray] = {}
    if rerun is not None:
        for _ in range(3):  # a changed match changes the cuts of the layers after it: re-run until stable
            reruns = rerun(matches)
            new = _assign(candidates, {**values, **reruns}, activations, order_of, prefer,
                          only={m.tensor for m in matches.values()})
            new.update({layer: m for layer, m in matches.items() if m.by == "position" and layer not in new})
            if {k: m.tensor for k, m in new.items()} == {k: m.tensor for k, m in matches.items()}:
                break
            matches = new
        else:
            reruns = rerun(matches)
    for layer, match in list(matches.items()):
        clean = match.tensor in reruns
        value = reruns[match.tensor] if clean else values[match.tensor]
        why = _doubt(source, match, value, activations, not clean, prefer)
        if why is not None:
            unmatched[layer] = why
            del matches[layer]
        else:
            match.score_db = sqnr_db(arrange(activations[layer], match.order), value)
            match.verified_by = "re-run" if clean else "activations"
    matches = {layer.name: matches[layer.name] for layer in source.layers if layer.name in matches}
    fused, identity = _the_rest(source, activations, matches, unmatched, candidates, tensors)
    position = {layer.name: i for i, layer in enumerate(source.layers)}
    return LayerMap(matches, fused, identity, dict(sorted(unmatched.items(), key=lambda kv: position[kv[0]])),
                    reruns)


# ----------------------------------------------------------------------------- proposing and assigning
def _candidates(source: Source, tensors: list[TensorInfo], values, activations) -> dict[str, list[str]]:
    """tensor -> the layers it may hold; layers that repeat their input's values (Dropout) are left to the rest."""
    repeats = {layer.name for layer in source.layers if _passes_through(layer, activations) is not None}
    keys = {layer.name: layer.key for layer in source.layers if layer.name not in repeats}
    position = {layer.name: i for i, layer in enumerate(source.layers)}
    consumers = source.consumers()
    spoken = {t.name: naming.mentioned(t.name, keys) for t in tensors if t.name in values and _is_float(values[t.name])}
    has_own = {layer for found in spoken.values() for layer in found}
    candidates: dict[str, list[str]] = {}
    for tensor, found in spoken.items():
        if not found:
            continue
        chain = list(found)
        deepest = max(found, key=position.__getitem__)
        while len(consumers.get(deepest, [])) == 1:  # ops fused after it (a TF.js conv's batch norm and ReLU)
            nxt = consumers[deepest][0]
            if nxt in has_own or len(source.layers[position[nxt]].inputs) != 1:
                break
            chain.append(nxt)
            deepest = nxt
        shallowest = source.layers[min(position[f] for f in found)]
        while len(shallowest.inputs) == 1 and shallowest.inputs[0] in position:  # ops before it whose output it
            previous = source.layers[position[shallowest.inputs[0]]]  # holds (an ONNX conv before its Clip,
            if previous.name in has_own or len(consumers[previous.name]) != 1:  # which the quantizer dropped)
                break
            chain.append(previous.name)
            shallowest = previous
        candidates[tensor] = [layer for layer in chain if layer not in repeats]
    return candidates


def _preferred_layouts(candidates, values, activations) -> dict[int, tuple[int, ...]]:
    """rank -> the layout most tensors of the artifact whose shape admits only one have with their candidates."""
    votes: dict[int, dict[tuple[int, ...], int]] = {}
    for tensor, chain in candidates.items():
        if tensor not in values:
            continue
        for layer in chain:
            if layer in activations:
                orders = layouts(activations[layer].shape, np.shape(values[tensor]))
                if len(orders) == 1:
                    count = votes.setdefault(len(orders[0]), {})
                    count[orders[0]] = count.get(orders[0], 0) + 1
    return {rank: max(count, key=count.get) for rank, count in votes.items()}


def _assign(candidates: dict[str, list[str]], values, activations, order_of, prefer, only=None) -> dict[str, Match]:
    """Each tensor to its closest candidate; each layer to the last tensor (in graph order) that chose it."""
    claims: dict[str, list[tuple[int, Match]]] = {}
    for tensor, chain in candidates.items():
        if tensor not in values or (only is not None and tensor not in only):
            continue
        scored = _score(values[tensor], chain, activations, prefer)
        if not scored:
            continue
        layer, score, order = scored[0]
        runner = (scored[1][0], scored[1][1]) if len(scored) > 1 else None
        claims.setdefault(layer, []).append((order_of[tensor], Match(layer, tensor, order, score, runner)))
    matches = {}
    for layer, found in claims.items():
        found.sort(key=lambda item: item[0])
        match = found[-1][1]
        match.also = [m.tensor for _, m in found[:-1]]
        matches[layer] = match
    return matches


def _match_output(source: Source, tensors, values, activations, matches: dict[str, Match]) -> None:
    """The model's output layer, by position: the last sink tensor of the artifact whose shape fits."""
    read = {i for t in tensors for i in t.inputs}
    sinks = [t.name for t in tensors if t.name not in read and t.name in values and _is_float(values[t.name])]
    taken = {m.tensor for m in matches.values()}
    for layer in source.outputs[:1]:
        if layer in matches or layer not in activations:
            continue
        for tensor in reversed(sinks):
            scored = _score(values[tensor], [layer], activations)
            if scored and tensor not in taken:
                matches[layer] = Match(layer, tensor, scored[0][2], scored[0][1], None, [], "position")
                break


# ----------------------------------------------------------------------------- verifying
def _doubt(source: Source, match: Match, value: np.ndarray, activations, noisy: bool, prefer) -> Optional[str]:
    """Why the match cannot stand, or None: a neighbour closer to the tensor, or (with activations only) too much
    noise to tell them apart."""
    own = activations[match.layer]
    score = sqnr_db(arrange(own, match.order), value)
    for neighbour, other, _ in _score(value, _neighbours(source, match.layer), activations, prefer):
        if _same_values(activations[neighbour], own):
            continue
        if match.runner_up is None or other > match.runner_up[1]:
            match.runner_up = (neighbour, other)
        if other > score + MARGIN_DB:
            return (f"tensor {match.tensor} is closer to {neighbour} ({other:.1f} dB) than to this layer "
                    f"({score:.1f} dB)")
        if noisy and score < NOISY_DB and other > score - MARGIN_DB:
            return (f"tensor {match.tensor} is as close to {neighbour} ({other:.1f} dB) as to this layer "
                    f"({score:.1f} dB): too noisy to tell them apart")
    return None


def _score(value: np.ndarray, layers: list[str], activations: dict[str, np.ndarray], prefer=None):
    """[(layer, SQNR, layout)] of the layers whose activation fits the tensor's shape, best first. A shape that
    fits both layouts takes `prefer` (the layout the artifact's unambiguous tensors use) when given."""
    scored = []
    for layer in dict.fromkeys(layers):
        reference = activations.get(layer)
        if reference is None:
            continue
        orders = layouts(reference.shape, value.shape)
        if len(orders) > 1 and prefer is not None:
            orders = [o for o in orders if o == prefer.get(len(o))] or orders
        best = max(((sqnr_db(arrange(reference, o), value), o) for o in orders), default=None, key=lambda t: t[0])
        if best is not None:
            scored.append((layer, best[0], best[1]))
    scored.sort(key=lambda item: -item[1])
    return scored


def _neighbours(source: Source, layer: str) -> list[str]:
    found = next(l for l in source.layers if l.name == layer)
    after = [l.name for l in source.layers if layer in l.inputs]
    return [n for n in (*found.inputs, *after) if n]


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    return a.size == b.size and np.array_equal(a.reshape(-1), b.reshape(-1))


def _is_float(value: np.ndarray) -> bool:
    return np.asarray(value).dtype.kind == "f"


# ----------------------------------------------------------------------------- the layers left over
def _the_rest(source: Source, activations, matches, unmatched, candidates, tensors):
    """(fused, identity), and the reason for every other layer in `unmatched`."""
    keys = {layer.name: layer.key for layer in source.layers}
    by_name = {layer.name: layer for layer in source.layers}
    fused: dict[str, str] = {}
    identity: dict[str, str] = {}
    for layer in source.layers:  # identity first: a Dropout between two matched layers passes its input on
        if layer.name not in matches and layer.name not in unmatched:
            parent = _passes_through(layer, activations)
            if parent is not None:
                identity[layer.name] = parent or "the model input"
    for host in matches:  # the layers between a matched layer and the matched layers (or inputs) it reads
        stack = list(by_name[host].inputs)
        while stack:
            name = stack.pop()
            if not name or name in matches or name in fused or name in unmatched or name not in by_name:
                continue
            if name not in identity:
                fused[name] = host
            stack.extend(by_name[name].inputs)
    mentioned = naming.mentioned_anywhere(
        [t.name for t in tensors] + [t.node for t in tensors if t.node] + [w for t in tensors for w in t.weights], keys)
    for layer in source.layers:
        name = layer.name
        if name in matches or name in unmatched or name in fused or name in identity:
            continue
        unmatched[name] = ("its name is in the artifact, but no tensor after it is matched" if name in mentioned
                           else "no tensor, node or weight of the artifact carries its name")
    return fused, identity


def _passes_through(layer, activations: dict[str, np.ndarray]) -> Optional[str]:
    """The input layer ('' for the model input) whose values this layer's output repeats, if any."""
    if len(layer.inputs) != 1 or layer.weights:
        return None
    parent = layer.inputs[0]
    mine = activations.get(layer.name)
    theirs = activations.get(parent) if parent else None
    if mine is None or theirs is None:
        return None
    return parent if _same_values(mine, theirs) else None
