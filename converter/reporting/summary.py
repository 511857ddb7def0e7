"""The verdict and the failures, first in every report: one headline, then one item per failure with how sure
it is, and the passing verdicts whose interval straddles their budget."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from converter import stats
from converter.reporting.text import fmt, fmt_interval
from converter.reporting.uncertainty import Check, evaluation_uncertainty

UNITS = {"max_top1_drop": ("top-1 drop", "pts"), "min_top1_agreement": ("top-1 agreement", "pct")}


@dataclass
class Failure:
    """One failed evaluation (or an artifact that failed before any evaluation, backend None)."""

    artifact: str
    backend: Optional[str]
    reasons: list[str]
    certainty: Optional[str]    # sure | within noise | None (no interval)
    detail: str                 # the interval sentences, or ''


def headline(report: dict[str, Any]) -> str:
    """'PASSED: ...' or 'FAILED: n of m artifacts ...' in one line."""
    artifacts = report.get("artifacts", [])
    failed = [a["name"] for a in artifacts if not a.get("passed", True)]
    if not failed and report.get("passed", True):
        return f"PASSED: all {len(artifacts)} artifacts met their budgets on every backend."
    found = failures(report)
    sure = {f.artifact for f in found if f.certainty != "within noise"}
    noisy = [name for name in failed if name not in sure]
    noise = f"; {len(noisy)} of them only within noise ({', '.join(noisy)})" if noisy else ""
    return f"FAILED: {len(failed)} of {len(artifacts)} artifacts failed ({', '.join(failed)}){noise}."


def check_sentence(check: Check) -> str:
    """How sure a budget check is, in words, e.g. 'top-1 drop 95% CI [0.40, 4.43] pts straddles the budget
    2.00 pts: within noise; about 20,000 samples at the observed rates would decide it'."""
    what, kind = UNITS.get(check.key, (check.key, ""))
    unit = " pts" if kind == "pts" else "%" if kind == "pct" else ""
    limit = fmt(check.limit, kind) + (" pts" if kind == "pts" else "")
    interval = f"{what} 95% CI {fmt_interval(check.interval, kind)}{unit}"
    if check.verdict == stats.NOISE:
        tail = (f"; about {check.samples_to_decide:,} samples at the observed rates would decide it"
                if check.samples_to_decide else "")
        return f"{interval} straddles the budget {limit}: within noise{tail}"
    side = ("wholly above" if check.key.startswith("max") else "wholly below") if check.verdict == stats.FAIL else "inside"
    return f"{interval} lies {side} the budget {limit}"


def failures(report: dict[str, Any]) -> list[Failure]:
    """Every failed evaluation of every failed artifact with its reasons and how sure it is, then the
    artifact-level failures (conversion or load errors) that no evaluation carries."""
    items = []
    for artifact in report.get("artifacts", []):
        if artifact.get("passed", True):
            continue
        placed: set[str] = set()
        for evaluation in artifact.get("evaluations", []):
            if evaluation.get("passed", True) or not evaluation.get("reasons"):
                continue
            uncertainty = evaluation_uncertainty(report, evaluation)
            detail = "; ".join(check_sentence(c) for c in uncertainty.checks if c.interval and c.verdict != stats.PASS)
            items.append(Failure(artifact["name"], evaluation["backend"], list(evaluation["reasons"]),
                                 uncertainty.certainty(False), detail))
            placed.update(evaluation["reasons"])
        rest = [r for r in artifact.get("failures", []) if r not in placed]
        if rest:
            items.append(Failure(artifact["name"], None, rest, "sure", ""))
    return items


def failure_text(failure: Failure) -> str:
    """'artifact on backend: reason; reason — how sure', each reason without the repeated prefix."""
    prefix = f"{failure.artifact} on {failure.backend}: " if failure.backend else ""
    reasons = "; ".join(r[len(prefix):] if prefix and r.startswith(prefix) else r for r in failure.reasons)
    text = prefix + reasons
    return f"{text} — {failure.detail}" if failure.detail else text


def uncertain_passes(report: dict[str, Any]) -> list[tuple[str, str, Check]]:
    """(artifact, backend, check) for every passing evaluation whose interval straddles a budget."""
    items = []
    for artifact in report.get("artifacts", []):
        for evaluation in artifact.get("evaluations", []):
            if evaluation.get("passed"):
                items += [(artifact["name"], evaluation["backend"], check)
                          for check in evaluation_uncertainty(report, evaluation).within_noise]
    return items


def uncertain_summary(report: dict[str, Any]) -> Optional[str]:
    """One sentence on the passing verdicts that are within noise, and the sample count that would decide them."""
    items = uncertain_passes(report)
    if not items:
        return None
    names = list(dict.fromkeys(name for name, _, _ in items))
    counts = sorted(c.samples_to_decide for _, _, c in items if c.samples_to_decide)
    wanted = ""
    if counts:
        span = f"{counts[0]:,}" if counts[0] == counts[-1] else f"{counts[0]:,}–{counts[-1]:,}"
        samples = (report.get("reference") or {}).get("samples")
        wanted = f" About {span} evaluation samples at the observed rates would decide them" + (
            f" (this run used {samples:,})." if samples else ".")
    return (f"{len(items)} passing verdict(s) of {len(names)} artifact(s) are within noise: their 95% interval "
            f"reaches past the budget ({', '.join(names)}).{wanted}")
