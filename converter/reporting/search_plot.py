"""A searched export's trials as a plot for report.html: top-1 drop on the search part against size (of the float
artifact), one point per candidate numbered by its trial, coloured by its verdict; the frontier (no other candidate
smaller and with a smaller drop) as a staircase, the budget as a dashed line, the chosen candidate ringed, and its
held-out drop (the verdict) beside it as a hollow star. A collapsed candidate (drop beyond the plotted range) sits on
the top edge as a triangle carrying its value."""
from __future__ import annotations

import base64
import io
from typing import Any, Optional

VERDICT_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "within noise": "#ef6c00", "error": "#616161"}


def _points(search: dict[str, Any]) -> list[tuple[int, float, float, str]]:
    """(trial, size ratio, drop in points, verdict) of the trials that were built and scored."""
    return [(i, t["size_ratio"], 100 * t["top1_drop"], t.get("verdict", "")) for i, t in enumerate(search["trials"], 1)
            if t.get("size_ratio") is not None and t.get("top1_drop") is not None]


def _held_out_drop(artifact: dict[str, Any]) -> Optional[float]:
    drops = [e["metrics"]["top1_drop"] for e in artifact.get("evaluations", [])
             if e.get("metrics", {}).get("top1_drop") is not None]
    return 100 * max(drops) if drops else None


def figure(artifact: dict[str, Any]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from converter.reporting.plots import pareto_front

    search = artifact["details"]["search"]
    points = _points(search)
    budget = search.get("budget", {}).get("max_top1_drop")
    budget_pts = 100 * budget if budget is not None else None
    held = _held_out_drop(artifact)
    cap = max(3 * (budget_pts or 1.0), 2.0)
    inside = [d for _, _, d, _ in points if d <= cap] + ([held] if held is not None and held <= cap else [])
    top = max([1.5 * (budget_pts or 1.0), *inside])
    bottom = min([-0.5, *inside])
    pad = 0.08 * (top - bottom)
    ylim = (bottom - pad, top + pad)

    result = Figure(figsize=(8.6, 4.0), dpi=100)
    FigureCanvasAgg(result)
    axes = result.add_subplot(1, 1, 1)
    axes.set_title(f"search {artifact['name']}: {len(search['trials'])} trials, scored in {search.get('backend')}",
                   fontsize=10)
    axes.set_xlabel("size (of the float artifact)")
    axes.set_ylabel("top-1 drop (points)")
    axes.set_ylim(*ylim)
    axes.grid(True, alpha=0.3)
    if budget_pts is not None:
        axes.axhline(budget_pts, color="#555555", linestyle="--", linewidth=1)
        axes.annotate(f"budget {budget_pts:g} pts", (1.0, budget_pts), xycoords=("axes fraction", "data"),
                      ha="right", va="bottom", fontsize=8, color="#555555")
    front = [i for i in pareto_front([(x, y) for _, x, y, _ in points]) if points[i][2] <= ylim[1]]
    if len(front) > 1:
        axes.step([points[i][1] for i in front], [points[i][2] for i in front], where="post", color="#1565c0",
                  linewidth=1.2, alpha=0.7, zorder=1)
    chosen = search.get("chosen_trial")
    off_axis = sorted((x, trial) for trial, x, drop, _ in points if drop > ylim[1])
    for trial, x, drop, verdict in points:
        colour = VERDICT_COLOURS.get(verdict, "#616161")
        off = drop > ylim[1]
        y = ylim[1] - pad / 2 if off else drop
        axes.scatter([x], [y], marker="^" if off else "o", s=42, color=colour, zorder=3)
        below = -10 - 9 * (off_axis.index((x, trial)) % 3) if off else 4  # staggered: collapsed points crowd
        axes.annotate(f"{trial}" + (f" ({drop:.0f})" if off else ""), (x, y), textcoords="offset points",
                      xytext=(4, below), fontsize=7)
        if trial == chosen:
            axes.scatter([x], [y], marker="o", s=160, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4)
            if held is not None:
                axes.scatter([x], [min(held, ylim[1] - pad / 2)], marker="*", s=170, facecolors="none",
                             edgecolors="black", linewidths=1.2, zorder=4)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLOURS.items()
               if any(p[3] == v for p in points)]
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
                       markersize=11, label="chosen (search part)"),
                Line2D([], [], marker="*", linestyle="", markerfacecolor="none", markeredgecolor="black",
                       markersize=12, label="chosen, held-out part (verdict)"),
                Line2D([], [], color="#1565c0", label="frontier")]
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)  # off the points
    result.tight_layout()
    return result


def plot(artifact: dict[str, Any]) -> Optional[str]:
    """figure() as base64 PNG; None with fewer than two scored trials."""
    if len(_points(artifact["details"]["search"])) < 2:
        return None
    buffer = io.BytesIO()
    figure(artifact).savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
