"""Summary statistics of a list of latencies."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99 (NumPy linear interpolation), mean, sample std (0 for one value), min, max and n, in ms.

    Raises ValueError on an empty list.
    """
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("summarize: no latencies")
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="linear")
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "n": int(values.size),
    }
