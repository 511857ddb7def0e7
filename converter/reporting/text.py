"""How one value is written in every report: percentages, points, sizes, milliseconds, intervals, names."""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

MISSING = "–"
QUANTIZATION_WIDTH = 18  # longer quantization names are shortened in tables (full text in a footnote)


def fmt(value: Any, kind: str = "") -> str:
    """A cell: '–' for missing, percentages, points, byte sizes, ms, ratios, or 4 significant digits."""
    if value is None:
        return MISSING
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "pts":
        return f"{100 * value:.2f}".replace("-0.00", "0.00")
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB" if value < 1024 * 1024 else f"{value / 1024 / 1024:.2f} MiB"
    if kind == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if kind == "x":
        return f"{value:.2f}×"
    if kind == "count":
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_interval(interval: Optional[Sequence[float]], kind: str) -> str:
    """'[lo, hi]' in the same unit as fmt(kind) (pct without the % sign inside), or '' without an interval."""
    if interval is None:
        return ""
    lo, hi = interval
    if kind == "pct":
        return f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    if kind == "pts":
        return f"[{100 * lo:.2f}, {100 * hi:.2f}]".replace("-0.00", "0.00")
    return f"[{fmt(lo)}, {fmt(hi)}]"


def short_quantization(name: str, width: int = QUANTIZATION_WIDTH) -> str:
    """A per-node map such as 'mixed(uint8:*,uint16:*/Conv1/*|*/predictions/*)' as 'mixed uint8+uint16';
    other names unchanged unless longer than `width`."""
    if len(name) <= width:
        return name
    if name.startswith("mixed("):
        dtypes = re.findall(r"(?:^mixed\(|,)([a-z0-9]+):", name)
        if dtypes:
            return "mixed " + "+".join(dtypes)
    return name[: width - 1] + "…"


def throughput(row: dict[str, Any]) -> Optional[float]:
    """Images per second of a latency row timed at batch > 1 (batch / p50), else None."""
    batch, p50 = row.get("batch") or 1, row.get("p50_ms")
    if batch <= 1 or not p50:
        return None
    return batch * 1000.0 / p50


def fmt_rate(value: Optional[float]) -> str:
    if value is None:
        return MISSING
    return f"{value:,.0f} img/s" if value >= 100 else f"{value:.3g} img/s"
