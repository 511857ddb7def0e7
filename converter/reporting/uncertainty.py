"""How sure each verdict is, from the report dict alone.

Intervals come from the evaluation's stored fields (`metrics.top1_ci`, `top1_drop_ci`, `top1_agreement_ci`,
`discordant`), else are computed from its `per_sample` vectors and the reference's, else from the counts
the report holds (a proportion needs only its value and the sample count; the paired drop needs the
discordant counts or the per-sample vectors). Every budget check on top-1 drop or agreement then reads
'pass', 'fail' or 'within noise' (converter.stats.verdict); the other checks are exact comparisons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from converter import stats
from converter.budget import CHECKS

STATISTICAL = {"max_top1_drop": "top1_drop", "min_top1_agreement": "top1_agreement"}


@dataclass
class Check:
    """One budget entry of one evaluation, judged with its interval where it has one."""

    key: str                          # the budget key, e.g. max_top1_drop
    limit: float
    value: Optional[float]
    interval: Optional[list[float]]
    verdict: Optional[str]            # pass | fail | within noise; None when the metric is missing
    samples_to_decide: Optional[int] = None


@dataclass
class Uncertainty:
    """Intervals and judged checks of one evaluation."""

    n: Optional[int] = None
    top1_ci: Optional[list[float]] = None
    drop_ci: Optional[list[float]] = None
    agreement_ci: Optional[list[float]] = None
    mcnemar_p: Optional[float] = None
    discordant: Optional[list[int]] = None
    checks: list[Check] = field(default_factory=list)

    @property
    def within_noise(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == stats.NOISE]

    def certainty(self, passed: bool) -> Optional[str]:
        """'sure' or 'within noise' for a verdict `passed`; None when no interval was available."""
        if not passed and any(c.verdict == stats.FAIL and (c.interval or c.key not in STATISTICAL) for c in self.checks):
            return "sure"
        if not self.checks or any(c.key in STATISTICAL and c.value is not None and not c.interval for c in self.checks):
            return None
        return "within noise" if self.within_noise else "sure"

    def samples_to_decide(self) -> Optional[int]:
        counts = [c.samples_to_decide for c in self.within_noise]
        return None if not counts or None in counts else max(counts)


def _decoded(holder: dict[str, Any]) -> Optional[Any]:
    data = holder.get("per_sample")
    if not data:
        return None
    try:
        return stats.decode_per_sample(data)
    except ValueError:
        return None


def evaluation_uncertainty(report: dict[str, Any], evaluation: Optional[dict[str, Any]]) -> Uncertainty:
    """Intervals and three-way checks of one evaluation of the report."""
    if not evaluation or "error" in evaluation:
        return Uncertainty()
    metrics = evaluation.get("metrics") or {}
    reference = report.get("reference") or {}
    ref_top1 = (reference.get("metrics") or {}).get("top1")
    result = Uncertainty(n=(evaluation.get("per_sample") or {}).get("n") or reference.get("samples"),
                         top1_ci=metrics.get("top1_ci"), drop_ci=metrics.get("top1_drop_ci"),
                         agreement_ci=metrics.get("top1_agreement_ci"), mcnemar_p=metrics.get("mcnemar_p"),
                         discordant=metrics.get("discordant"))
    table = _table(result, reference, evaluation, ref_top1)
    if table is not None:
        a, b, c, d = table
        result.discordant = result.discordant or [b, c]
        result.drop_ci = result.drop_ci or list(stats.newcombe_paired(a, b, c, d))
        result.mcnemar_p = stats.mcnemar_p(b, c) if result.mcnemar_p is None else result.mcnemar_p
    n = result.n
    if n:
        if result.top1_ci is None and metrics.get("top1") is not None:
            result.top1_ci = list(stats.wilson(round(metrics["top1"] * n), n))
        if result.agreement_ci is None and metrics.get("top1_agreement") is not None:
            result.agreement_ci = list(stats.wilson(round(metrics["top1_agreement"] * n), n))
    result.checks = _checks(evaluation.get("budget") or {}, metrics, result, table)
    return result


def _table(result: Uncertainty, reference: dict[str, Any], evaluation: dict[str, Any],
           ref_top1: Optional[float]) -> Optional[tuple[int, int, int, int]]:
    """The paired 2x2 table (both right, reference only, artifact only, neither), when the report allows it."""
    ref_correct, correct = _decoded(reference), _decoded(evaluation)
    if ref_correct is not None and correct is not None and len(ref_correct) == len(correct):
        return stats.paired_table(ref_correct, correct)
    if result.discordant and result.n and ref_top1 is not None:
        try:
            return stats.table_from_counts(result.n, ref_top1, result.discordant)
        except ValueError:
            return None
    return None


def _checks(budget: dict[str, Any], metrics: dict[str, Any], result: Uncertainty,
            table: Optional[tuple[int, int, int, int]]) -> list[Check]:
    checks = []
    for key, limit in budget.items():
        if limit is None or key not in CHECKS:
            continue
        metric, kind = CHECKS[key]
        value = metrics.get(metric)
        interval = result.drop_ci if key == "max_top1_drop" else result.agreement_ci if key == "min_top1_agreement" else None
        if value is None:
            checks.append(Check(key, limit, None, None, None))
            continue
        if interval is None:
            # an exact comparison (deterministic metric), or an interval the report cannot give
            broken = value > limit + 1e-12 if kind == "max" else value < limit - 1e-12
            checks.append(Check(key, limit, value, None, stats.FAIL if broken else stats.PASS))
            continue
        check = Check(key, limit, value, interval, stats.verdict(interval, limit, kind))
        if check.verdict == stats.NOISE:
            check.samples_to_decide = _samples(key, limit, metrics, result, table)
        checks.append(check)
    return checks


def _samples(key: str, limit: float, metrics: dict[str, Any], result: Uncertainty,
             table: Optional[tuple[int, int, int, int]]) -> Optional[int]:
    if key == "max_top1_drop" and table is not None:
        return stats.drop_samples_to_decide(*table, limit)
    if key == "min_top1_agreement" and result.n:
        return stats.proportion_samples_to_decide(round(metrics["top1_agreement"] * result.n), result.n, limit)
    return None
