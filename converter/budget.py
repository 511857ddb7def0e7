"""Turn metrics and a budget into failures that carry the numbers."""
from __future__ import annotations

from converter.recipe.schema import Budget
from converter.records import Failure

# budget key -> (metric, comparison); "max" means the metric must not exceed the budget
CHECKS = {
    "max_top1_drop": ("top1_drop", "max"),
    "min_top1_agreement": ("top1_agreement", "min"),
    "max_abs_diff": ("max_abs_diff", "max"),
    "max_mean_abs_diff": ("mean_abs_diff", "max"),
    "min_cosine": ("cosine", "min"),
    "min_snr_db": ("snr_db", "min"),
    "max_mse": ("mse", "max"),
    "max_mae": ("mae", "max"),
}


def active(budget: Budget) -> dict[str, float]:
    return {key: value for key, value in budget.model_dump().items() if value is not None}


def failures(metrics: dict[str, float], budget: Budget, artifact: str, backend: str) -> list[Failure]:
    """One failure per broken budget entry, naming artifact, backend, metric, budget and measured value."""
    found = []
    for key, limit in active(budget).items():
        metric, kind = CHECKS[key]
        if metric not in metrics:
            continue
        value = metrics[metric]
        broken = value > limit + 1e-12 if kind == "max" else value < limit - 1e-12
        if broken:
            sign = ">" if kind == "max" else "<"
            found.append(Failure(artifact, backend, "budget",
                                 f"{artifact} on {backend}: {metric} {value:.4g} {sign} budget {key} {limit:g}",
                                 metric, limit, value))
    return found
