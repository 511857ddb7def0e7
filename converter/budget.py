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


def failures(metrics: dict[str, float], budget: Budget, artifact: str, backend: str,
             within_noise: str = "point") -> list[Failure]:
    """One failure per broken budget entry, naming artifact, backend, metric, budget and measured value.

    Where the metric carries a 95 % interval (`<metric>_ci`), a verdict the interval cannot decide ("within
    noise") is settled by `within_noise`: 'point' (the measured value against the budget), 'pass' or 'fail'.
    """
    from converter import stats

    found = []
    for key, limit in active(budget).items():
        metric, kind = CHECKS[key]
        if metric not in metrics:
            continue
        value = metrics[metric]
        point_broken = value > limit + 1e-12 if kind == "max" else value < limit - 1e-12
        three_way = stats.verdict(metrics.get(f"{metric}_ci"), limit, kind)
        if stats.resolve(three_way, not point_broken, within_noise):  # type: ignore[arg-type]
            continue
        sign = ">" if kind == "max" else "<"
        message = f"{artifact} on {backend}: {metric} {value:.4g} {sign} budget {key} {limit:g}" if point_broken else \
            f"{artifact} on {backend}: {metric} {value:.4g} within budget {key} {limit:g}, but not surely"
        if three_way == stats.NOISE:
            low, high = metrics[f"{metric}_ci"]
            message += f" (95 % interval {low:.4g} to {high:.4g}: within noise, verify.within_noise: {within_noise})"
        found.append(Failure(artifact, backend, "budget", message, metric, limit, value))
    return found
