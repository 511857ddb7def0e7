"""The points of report.html's plots, from the report dict: one number per artifact (the same in every plot
and in the key under them), one deployment target per backend, the drop with its interval and its budget."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from converter.reporting.rows import SummaryRow, summary_rows, target_of
from converter.reporting.uncertainty import evaluation_uncertainty


@dataclass
class Point:
    number: int                       # the artifact's position in the report, from 1
    name: str
    format: str
    backend: str
    target: str                       # web | mobile | server | other
    x: float
    y: float
    y_interval: Optional[tuple[float, float]] = None
    budget: Optional[float] = None    # in the y unit, for drop plots
    passed: bool = True


def artifact_numbers(report: dict[str, Any]) -> dict[str, int]:
    return {a["name"]: i for i, a in enumerate(report.get("artifacts", []), 1)}


def download_bytes(artifact: dict[str, Any]) -> Optional[int]:
    """The gzip size (what a web or app user downloads), else the size on disk."""
    return artifact.get("gzip_bytes") or artifact.get("size_bytes")


def _drop(report: dict[str, Any], row: SummaryRow) -> tuple[Optional[float], Optional[tuple[float, float]], Optional[float]]:
    """(drop, interval, budget) in points."""
    drop = row.metrics.get("top1_drop")
    if drop is None:
        return None, None, None
    interval = evaluation_uncertainty(report, row.evaluation).drop_ci
    budget = ((row.evaluation or {}).get("budget") or {}).get("max_top1_drop")
    return (100 * drop, (100 * interval[0], 100 * interval[1]) if interval else None,
            100 * budget if budget is not None else None)


def _point(report: dict[str, Any], numbers: dict[str, int], row: SummaryRow, x: float, y: float, **extra: Any) -> Point:
    a = row.artifact
    return Point(numbers[a["name"]], a["name"], a["format"], row.backend, target_of(row.backend), x, y,
                 passed=row.passed, **extra)


def drop_size_points(report: dict[str, Any]) -> list[Point]:
    """Top-1 drop (points) against download size (KiB): per artifact and target, its worst backend."""
    numbers, worst = artifact_numbers(report), {}
    for row in summary_rows(report):
        size = download_bytes(row.artifact)
        drop, interval, budget = _drop(report, row)
        if not size or drop is None:
            continue
        key = (row.artifact["name"], target_of(row.backend))
        if key not in worst or drop > worst[key].y:
            worst[key] = _point(report, numbers, row, size / 1024, drop, y_interval=interval, budget=budget)
    return list(worst.values())


def latency_size_points(report: dict[str, Any]) -> list[Point]:
    """p50 latency (ms) against download size (KiB), per artifact and backend."""
    numbers = artifact_numbers(report)
    return [_point(report, numbers, row, download_bytes(row.artifact) / 1024, row.latency["p50_ms"])
            for row in summary_rows(report) if row.latency and download_bytes(row.artifact)]


def drop_latency_points(report: dict[str, Any]) -> list[Point]:
    """Top-1 drop (points) against p50 latency (ms), per artifact and backend."""
    numbers, points = artifact_numbers(report), []
    for row in summary_rows(report):
        drop, interval, budget = _drop(report, row)
        if row.latency and drop is not None:
            points.append(_point(report, numbers, row, row.latency["p50_ms"], drop, y_interval=interval, budget=budget))
    return points
