"""The verdict for people: which layers to look at first, what is unusual about them, and whether a small set of
layers can be blamed at all.

Layers are ranked by the error they add by themselves (local SQNR, lowest first); layers the artifact computes
exactly (local SQNR above EXACT_DB: a padding, a float op) are not ranked. Their noise-to-signal ratios
(10^(-SQNR/10)) add up roughly as the noise does along the network, so each layer's share of their sum is its share
of the error, and keeping a set of layers at higher precision is predicted to raise the output's SQNR by
10·log10(1 / (1 - their share)). The suggested set is the fewest top-ranked layers, at most a fifth of the ranked
ones, predicted to lift the output to TARGET_DB (or to the recipe's min_snr_db). When even the worst fifth is not,
the error is spread over the network and the verdict says so with the numbers, rather than naming a few layers.

TARGET_DB (12 dB at the output, used when the budget sets no min_snr_db) is a first estimate of the output SQNR
that int8 artifacts within a top-1 point of their float model reach; it is still to be measured on the real
MobileNet v1 0.25 (docs/explain.md, "Not done yet"). The prediction is first order (it assumes the output error is
the sum of what the layers add, each as it is now); the seeded-fault tests check it by re-exporting as suggested.
"""
from __future__ import annotations

import math
from typing import Any, Optional

EXACT_DB = 100.0
TARGET_DB = 12.0
MAX_FRACTION = 0.2
CONCENTRATED = 0.5  # a set of top layers adding this share of the noise is to blame, even if not enough alone
TOP_ROWS = 5


def noise_ratio(sqnr_db: float) -> float:
    return 10 ** (-sqnr_db / 10)


def rank(rows: list[dict[str, Any]], output_db: Optional[float], target_db: float = TARGET_DB) -> dict[str, Any]:
    """{'ranking', 'shares', 'suggested', 'spread', 'predictions': [{'layers', 'share', 'output_db'}], ...}.

    `output_db`: the artifact's SQNR at the model's output now (None when the output is not matched)."""
    measured = [r for r in rows if (r.get("local") or {}).get("sqnr_db") is not None
                and r["local"]["sqnr_db"] < EXACT_DB]
    measured.sort(key=lambda r: (r["local"]["sqnr_db"], r["accumulated"]["sqnr_db"]))
    total = sum(noise_ratio(r["local"]["sqnr_db"]) for r in measured)
    shares = {r["layer"]: (noise_ratio(r["local"]["sqnr_db"]) / total if total else 0.0) for r in measured}
    cap = max(1, math.floor(MAX_FRACTION * len(measured)))
    predictions, held, found = [], 0.0, None
    for count, r in enumerate(measured[:cap], 1):
        held += shares[r["layer"]]
        gain = 10 * math.log10(1 / max(1 - held, 1e-9))
        predicted = None if output_db is None else round(output_db + gain, 2)
        predictions.append({"layers": count, "share": round(held, 4), "output_db": predicted})
        if predicted is not None and predicted >= target_db:
            found = count
            break
    fifth = sum(shares[r["layer"]] for r in measured[:cap])
    healthy = output_db is not None and output_db >= target_db
    enough = found is not None
    if found is None and not healthy and fifth >= CONCENTRATED:  # concentrated, but the rest keeps it short
        found = next(count for count in range(1, cap + 1)
                     if sum(shares[r["layer"]] for r in measured[:count]) >= CONCENTRATED)
        predictions = predictions[:found]
    if healthy:
        predictions, found = [], None
    return {"ranking": [r["layer"] for r in measured], "shares": {k: round(v, 4) for k, v in shares.items()},
            "suggested": [r["layer"] for r in measured[:found]] if found else [], "enough": enough,
            "spread": found is None and not healthy and bool(measured), "healthy": healthy,
            "worst_fifth": [r["layer"] for r in measured[:cap]],
            "top_fifth": cap, "top_fifth_share": round(fifth, 4), "predictions": predictions,
            "output_db": output_db, "target_db": target_db}


def flags(row: dict[str, Any], per_tensor_activations: bool) -> list[str]:
    """Short sentences on what is unusual about a layer's weights and float activations."""
    found = []
    weights = row.get("weights") or {}
    if (weights.get("range_ratio") or 0) >= 20 and weights.get("outliers", 0) <= 0.05 * weights.get("count", 0):
        found.append(f"{weights['outliers']} of {weights['count']} weights reach past a quarter of its range, up to "
                     f"{weights['range_ratio']:.0f}× the median |w|: they set the quantization step")
    if (weights.get("channel_spread") or 0) >= 10 and weights.get("per_tensor_step"):
        found.append(f"output channel {weights['widest_channel']}'s weights reach {weights['channel_spread']:.0f}× "
                     "the median channel's, under one step for all channels")
    if (weights.get("share_on_zero_level") or 0) >= 0.5:
        found.append(f"{weights['share_on_zero_level']:.0%} of its weights land on the level nearest zero")
    activation = row.get("activation") or {}
    if activation.get("flat_channels"):
        found.append(f"{activation['flat_channels']} of {activation['channels']} output channels have near-zero "
                     "variance in the float model")
    if per_tensor_activations and (activation.get("range_ratio") or 0) >= 10:
        found.append(f"output channel {activation['widest_channel']} peaks at {activation['range_ratio']:.0f}× the "
                     "median channel, under one activation scale for all")
    return found


def verdict(rows: list[dict[str, Any]], ranking: dict[str, Any], suggestion: Optional[dict[str, Any]],
            unmatched: int) -> str:
    by_layer = {r["layer"]: r for r in rows}
    if not ranking["ranking"]:
        return ("No layer's local error could be measured" + (f" ({unmatched} layers not matched)" if unmatched else "")
                + ": see the accumulated SQNR along the network.")
    output, target = ranking["output_db"], ranking["target_db"]
    now = f"The output is at {output:.1f} dB SQNR" if output is not None else "The output is not matched"
    if ranking.get("healthy"):
        worst = by_layer[ranking["ranking"][0]]
        return (f"{now}, at or above the {target:g} dB target: if the artifact fails its "
                f"budget, accumulated quantization noise is not why. The layer adding the most is {worst['layer']} "
                f"(local SQNR {worst['local']['sqnr_db']:.1f} dB, {ranking['shares'][worst['layer']]:.0%} of the "
                "added noise).")
    if ranking["spread"]:
        worst = by_layer[ranking["ranking"][0]]
        last = ranking["predictions"][-1]
        text = (f"The error is spread over the network. {now}; the worst fifth of the quantized layers "
                f"({ranking['top_fifth']} of {len(ranking['ranking'])}) adds {ranking['top_fifth_share']:.0%} of the "
                f"noise, the worst one ({worst['layer']}, local SQNR {worst['local']['sqnr_db']:.1f} dB) "
                f"{ranking['shares'][worst['layer']]:.0%}")
        if last["output_db"] is not None:
            text += (f"; keeping all {last['layers']} at higher precision is predicted to lift the output to "
                     f"{last['output_db']:.1f} dB, short of the {target:g} dB target")
        text += ". No small set of layers kept at higher precision can repair it: a finer scheme for every layer can"
        return text + (f" ({suggestion['whole']})." if suggestion and suggestion.get("whole") else ".")
    named = ranking["suggested"]
    parts = []
    for layer in named:
        row = by_layer[layer]
        parts.append(f"{layer} (local SQNR {row['local']['sqnr_db']:.1f} dB, {ranking['shares'][layer]:.0%} of the "
                     f"added noise; accumulated {row['accumulated']['sqnr_db']:.1f} dB)")
    last = ranking["predictions"][-1]
    text = (f"{len(named)} of {len(ranking['ranking'])} quantized layers add {last['share']:.0%} of the noise: "
            + "; ".join(parts) + f". {now}; keeping {'it' if len(named) == 1 else 'them'} at higher precision is "
            f"predicted to lift it to {last['output_db']:.1f} dB")
    if ranking.get("enough", True):
        text += f" (the target is {target:g} dB)."
    else:
        text += (f", short of the {target:g} dB target: the rest of the noise, spread over the other layers, needs "
                 "a finer scheme as well" + (f" ({suggestion['whole']})." if suggestion and suggestion.get("whole") else "."))
    first = by_layer[named[0]]
    if first.get("flags"):
        text += f" {named[0]}: " + "; ".join(first["flags"]) + "."
    if suggestion and suggestion.get("text"):
        text += " " + suggestion["text"]
    return text
