"""Accuracy figures with their uncertainty: intervals, paired tests and a three-way verdict (numpy/scipy only).

All intervals are two-sided at `confidence` (default 95 %). The methods, and why:

- one proportion (top-1, agreement): Wilson score interval (Wilson 1927; Newcombe 1998a, method 3), which
  keeps its coverage near 0 and 1, where accuracies live.
- the drop against the reference, measured on the same images: Newcombe's hybrid score interval for a
  difference of *paired* proportions (Newcombe 1998b, "Improved confidence intervals for the difference
  between binomial proportions based on paired data", Stat Med 17:2635, method 10): the two marginal Wilson
  intervals combined "square-and-add" with the estimated correlation phi between them (phi set to 0 when
  0 <= ad-bc <= n/2, reduced by n/2 above, as in the paper and in Fagerland, Lydersen & Laake 2014/2017).
- two *independent* samples (two runs without per-sample data): Newcombe's hybrid score interval for
  independent proportions (Newcombe 1998c, Stat Med 17:873, method 10): the same with phi = 0.
- the paired test: McNemar's exact conditional test, a two-sided binomial test of the discordant pairs
  b against b + c at 1/2, at every count (it is cheap); `mid_p=True` gives the mid-p version, which
  Fagerland, Lydersen & Laake (2013, BMC Med Res Methodol 13:91) recommend as less conservative.

Per-sample data travel in report.json as `{"correct": base64(np.packbits(bool array)), "n": N}`.
"""
from __future__ import annotations

import base64
import functools
import math
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

Interval = tuple[float, float]
Verdict = Literal["pass", "fail", "within noise"]
PASS, FAIL, NOISE = "pass", "fail", "within noise"
MAX_SAMPLES = 10_000_000  # samples_to_decide gives up above this


@functools.lru_cache(maxsize=8)
def z_value(confidence: float = 0.95) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


# ----------------------------------------------------------------------------- intervals
def wilson(k: float, n: float, confidence: float = 0.95) -> Optional[Interval]:
    """Wilson score interval for k successes in n trials; None when n is 0."""
    if n <= 0:
        return None
    z = z_value(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_table(first: np.ndarray, second: np.ndarray) -> tuple[int, int, int, int]:
    """(a, b, c, d) of two paired boolean vectors: both true, first only, second only, neither."""
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    if first.shape != second.shape:
        raise ValueError(f"paired vectors differ in length: {first.shape} and {second.shape}")
    return (int(np.sum(first & second)), int(np.sum(first & ~second)), int(np.sum(~first & second)),
            int(np.sum(~first & ~second)))


def newcombe_paired(a: float, b: float, c: float, d: float, confidence: float = 0.95) -> Optional[Interval]:
    """Interval for p1 - p2 = (b - c) / n, where p1 = (a + b) / n and p2 = (a + c) / n are measured on the
    same n items (Newcombe 1998b, method 10). None when n is 0."""
    n = a + b + c + d
    if n <= 0:
        return None
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    delta = p1 - p2
    lower = delta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = delta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def newcombe_unpaired(k1: float, n1: float, k2: float, n2: float, confidence: float = 0.95) -> Optional[Interval]:
    """Interval for k1/n1 - k2/n2 from two independent samples (Newcombe 1998c, method 10). None if n is 0."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    delta = p1 - p2
    return (max(-1.0, delta - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, delta + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


# ----------------------------------------------------------------------------- test
def mcnemar_p(b: int, c: int, mid_p: bool = False) -> float:
    """Two-sided McNemar exact conditional p-value of b against c discordant pairs (1.0 when b = c = 0).

    Exact: min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2), the same as
    scipy.stats.binomtest(b, b + c, 0.5). Mid-p: that minus P(X = min(b, c)).
    """
    from scipy.stats import binom

    n = b + c
    if n == 0:
        return 1.0
    low = min(b, c)
    p = 2 * float(binom.cdf(low, n, 0.5))
    if mid_p:
        p -= float(binom.pmf(low, n, 0.5))
    return min(1.0, p)


# ----------------------------------------------------------------------------- per-sample data
def encode_per_sample(correct: Sequence[bool] | np.ndarray) -> dict[str, Any]:
    """{"correct": base64 of np.packbits(bool array), "n": N}: the report.json form of a per-sample vector."""
    array = np.asarray(correct, dtype=bool).ravel()
    return {"correct": base64.b64encode(np.packbits(array).tobytes()).decode("ascii"), "n": int(array.size)}


def decode_per_sample(data: dict[str, Any]) -> np.ndarray:
    """The boolean vector of an encode_per_sample dict; ValueError when it is malformed."""
    try:
        n = int(data["n"])
        raw = base64.b64decode(data["correct"], validate=True)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"per_sample: expected {{'correct': base64, 'n': N}} ({error})") from None
    if n < 0 or len(raw) != (n + 7) // 8:
        raise ValueError(f"per_sample: {len(raw)} bytes cannot hold n = {n} samples")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


# ----------------------------------------------------------------------------- report fields
def _pair(interval: Optional[Interval]) -> Optional[list[float]]:
    return None if interval is None else [float(interval[0]), float(interval[1])]


def evaluation_stats(reference_correct: np.ndarray, correct: np.ndarray, agreement: Optional[np.ndarray] = None,
                     confidence: float = 0.95) -> dict[str, Any]:
    """The uncertainty fields of one evaluation's `metrics` (docs/report-format.md), from per-sample vectors
    in the same order: reference correct, artifact correct and (optionally) arg-max agreement."""
    a, b, c, d = paired_table(reference_correct, correct)
    n = a + b + c + d
    fields: dict[str, Any] = {
        "top1_ci": _pair(wilson(a + c, n, confidence)),
        "top1_drop_ci": _pair(newcombe_paired(a, b, c, d, confidence)),
        "mcnemar_p": mcnemar_p(b, c),
        "discordant": [b, c],
    }
    if agreement is not None:
        agreement = np.asarray(agreement, bool)
        fields["top1_agreement_ci"] = _pair(wilson(int(agreement.sum()), agreement.size, confidence))
    return fields


def table_from_counts(n: int, reference_top1: float, discordant: Sequence[int]) -> tuple[int, int, int, int]:
    """(a, b, c, d) from the sample count, the reference top-1 and the stored discordant counts [b, c]."""
    b, c = int(discordant[0]), int(discordant[1])
    a = int(round(reference_top1 * n)) - b
    d = n - a - b - c
    if min(a, d) < 0:
        raise ValueError(f"discordant {[b, c]} impossible with n = {n} and reference top-1 {reference_top1}")
    return a, b, c, d


# ----------------------------------------------------------------------------- verdict
def verdict(interval: Optional[Sequence[float]], limit: float, kind: Literal["max", "min"] = "max") -> Optional[Verdict]:
    """'pass' when the whole interval keeps the limit, 'fail' when the whole interval breaks it, 'within noise'
    when it straddles the limit. kind 'max': the metric must not exceed the limit (a drop); 'min': must reach it."""
    if interval is None:
        return None
    lower, upper = interval
    if kind == "max":
        return PASS if upper <= limit else FAIL if lower > limit else NOISE
    return PASS if lower >= limit else FAIL if upper < limit else NOISE


WithinNoise = Literal["pass", "fail", "point"]


def resolve(three_way: Optional[Verdict], point_passed: bool, within_noise: WithinNoise = "point") -> bool:
    """The pass/fail a gate acts on: a sure verdict as it is; 'within noise' by the recipe's policy
    ('pass', 'fail', or 'point': the point estimate against the limit, the toolkit's behaviour without intervals)."""
    if three_way == PASS:
        return True
    if three_way == FAIL:
        return False
    if three_way == NOISE and within_noise != "point":
        return within_noise == "pass"
    return point_passed


def samples_to_decide(interval_at: Callable[[float], Optional[Sequence[float]]], n: int, limit: float,
                      kind: Literal["max", "min"] = "max") -> Optional[int]:
    """The smallest sample count (to 2 significant digits, at least n) at which the interval, recomputed with
    every observed rate held, no longer straddles the limit; None when no count up to MAX_SAMPLES decides.
    `interval_at(m)` gives the interval at m samples (counts scaled by m / n)."""
    def decided(m: float) -> bool:
        return verdict(interval_at(m), limit, kind) in (PASS, FAIL)

    if n <= 0:
        return None
    if decided(n):
        return n
    high = float(n)
    while not decided(high):
        high *= 2
        if high > MAX_SAMPLES:
            return None
    low = high / 2
    while high - low > max(1.0, 0.005 * high):
        middle = (low + high) / 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return _round_up(math.ceil(high))


def _round_up(count: int) -> int:
    """Up to two significant digits: 1234 -> 1300."""
    step = 10 ** max(0, len(str(count)) - 2)
    return -(-count // step) * step


def drop_samples_to_decide(a: int, b: int, c: int, d: int, limit: float, confidence: float = 0.95) -> Optional[int]:
    """samples_to_decide for the paired drop (b - c) / n against a max_top1_drop budget."""
    n = a + b + c + d

    def at(m: float) -> Optional[Interval]:
        s = m / n
        return newcombe_paired(a * s, b * s, c * s, d * s, confidence)

    return samples_to_decide(at, n, limit, "max")


def proportion_samples_to_decide(k: int, n: int, limit: float, confidence: float = 0.95) -> Optional[int]:
    """samples_to_decide for a proportion (agreement) against a minimum."""
    return samples_to_decide(lambda m: wilson(k * m / n, m, confidence), n, limit, "min")


# ----------------------------------------------------------------------------- two runs
def run_difference(base: dict[str, Any], new: dict[str, Any], confidence: float = 0.95) -> Optional[dict[str, Any]]:
    """Top-1 of `base` minus top-1 of `new` (positive: `new` lost accuracy), with its interval.

    Each side is {"top1": float, "n": int, "correct": optional bool vector}. Paired (Newcombe 1998b interval,
    McNemar exact p) when both carry per-sample vectors of the same length, on the caller's word that they are
    the same images in the same order; else unpaired (Newcombe 1998c interval, no test). None without counts.
    """
    if base.get("correct") is not None and new.get("correct") is not None and len(base["correct"]) == len(new["correct"]):
        a, b, c, d = paired_table(base["correct"], new["correct"])
        n = a + b + c + d
        return {"difference": (b - c) / n if n else 0.0, "ci": _pair(newcombe_paired(a, b, c, d, confidence)),
                "p": mcnemar_p(b, c), "method": "paired", "discordant": [b, c]}
    if not base.get("n") or not new.get("n") or base.get("top1") is None or new.get("top1") is None:
        return None
    k1, k2 = round(base["top1"] * base["n"]), round(new["top1"] * new["n"])
    interval = newcombe_unpaired(k1, base["n"], k2, new["n"], confidence)
    return {"difference": base["top1"] - new["top1"], "ci": _pair(interval), "p": None, "method": "unpaired"}
