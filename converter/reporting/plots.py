"""report.html's plots (matplotlib, Agg canvas, base64 PNG), one panel per deployment target (web, mobile,
server), because a web user never chooses between a TF.js model and an ONNX one.

Every point is numbered by its artifact (the key under the plots names them); failing points are ringed in
red and crossed; a drop plot shows each budget as a dashed line and clips its y axis to the range the budgets
make interesting, drawing a point beyond it at the edge as a triangle with its value; the Pareto front (smaller
is better on both axes) runs through the passing, in-range points of each panel.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Callable, Optional, Sequence

from converter.reporting.labels import group_close, place_labels
from converter.reporting.plot_data import Point

FORMAT_COLOURS = {"savedmodel": "#4c4c4c", "keras": "#4c4c4c", "tflite": "#1f77b4", "onnx": "#ff7f0e",
                  "tfjs_graph": "#2ca02c", "tfjs_layers": "#9467bd"}
BACKEND_MARKERS = {"tf": "s", "tflite": "o", "onnxruntime": "D", "tfjs-cpu": "p", "tfjs-wasm": "h"}  # triangles: off the axis
FAIL_COLOUR = "#c62828"
TARGET_ORDER = ("web", "mobile", "server", "other")
TARGET_TITLES = {"web": "web (TF.js)", "mobile": "mobile (LiteRT)", "server": "server (TF, onnxruntime)", "other": "other"}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both are better smaller), by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(ox <= x and oy <= y and (ox < x or oy < y) for ox, oy in points)]
    return sorted(front, key=lambda i: points[i])


def drop_range(points: Sequence[Point]) -> tuple[float, float]:
    """The y range (points of top-1) worth looking at: the budgets and the drops near them. A drop beyond three
    times the largest budget (a collapse) is left outside and drawn at the edge."""
    budget = max([p.budget for p in points if p.budget is not None] or [1.0])
    cap = max(3 * budget, 2.0)
    inside = [v for p in points for v in (p.y, *(p.y_interval or ())) if -cap <= v <= cap]
    top, bottom = max([1.5 * budget, *inside]), min([-0.5, *inside])
    pad = 0.06 * (top - bottom)
    return bottom - pad, top + pad


def _log_wanted(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 8


def _style_axis(axis: Any, log: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    if log:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_major_locator(MaxNLocator(nbins=6))
    axis.set_major_formatter(plain)


def _draw_budgets(axes: Any, points: Sequence[Point], ylim: tuple[float, float]) -> list[Any]:
    """Dashed lines at each budget, labelled with the artifacts it applies to; returns the label artists."""
    notes = []
    budgets: dict[float, list[int]] = {}
    for p in points:
        if p.budget is not None:
            budgets.setdefault(p.budget, []).append(p.number)
    for value, numbers in sorted(budgets.items()):
        if not ylim[0] <= value <= ylim[1]:
            continue
        axes.axhline(value, color=FAIL_COLOUR, linestyle="--", linewidth=0.9, alpha=0.7, zorder=1)
        who = "" if len(budgets) == 1 else "\n(" + ", ".join(map(str, sorted(set(numbers)))) + ")"
        notes.append(axes.annotate(f"{value:g} pt{'s' if value != 1 else ''}{who}", (1, value), annotation_clip=False,
                                   xycoords=("axes fraction", "data"), xytext=(3, 0), textcoords="offset points",
                                   ha="left", va="center", fontsize=7, color=FAIL_COLOUR))
    return notes


def _panel(axes: Any, points: list[Point], xlabel: str, ylabel: str, drop: bool) -> Callable[[], None]:
    """Draw one target's points, error bars, front and budgets; returns the function that labels them."""
    xs = [p.x for p in points]
    x_log = _log_wanted(xs)
    if x_log:
        axes.set_xscale("log")
    ylim = drop_range(points) if drop else None
    y_log = not drop and _log_wanted([p.y for p in points])
    if y_log:
        axes.set_yscale("log")
    shown: list[tuple[float, float]] = []
    texts: list[str] = []
    for p in points:
        y, clipped = p.y, None
        if ylim and not ylim[0] <= p.y <= ylim[1]:
            clipped = "up" if p.y > ylim[1] else "down"
            span = ylim[1] - ylim[0]
            y = ylim[1] - 0.02 * span if clipped == "up" else ylim[0] + 0.02 * span
        colour = FORMAT_COLOURS.get(p.format, "#17becf")
        marker = ("^" if clipped == "up" else "v") if clipped else BACKEND_MARKERS.get(p.backend, "P")
        if p.y_interval and not clipped:
            axes.errorbar(p.x, y, yerr=[[y - p.y_interval[0]], [p.y_interval[1] - y]], fmt="none", ecolor=colour,
                          elinewidth=0.9, capsize=2, alpha=0.7, zorder=2)
        axes.scatter(p.x, y, color=colour, marker=marker, s=60 if clipped else 36, zorder=4,
                     edgecolors=FAIL_COLOUR if not p.passed else "white", linewidths=1.4 if not p.passed else 0.5)
        if not p.passed:
            axes.scatter(p.x, y, marker="x", color=FAIL_COLOUR, s=16, linewidths=1.0, zorder=5)
        shown.append((p.x, y))
        texts.append(f"{p.number} {'↑' if clipped == 'up' else '↓'}{p.y:.1f}" if clipped else str(p.number))
    front_candidates = [i for i, p in enumerate(points) if p.passed and shown[i][1] == p.y]
    if front_candidates:
        front = [front_candidates[i] for i in pareto_front([(points[i].x, points[i].y) for i in front_candidates])]
        axes.plot([points[i].x for i in front], [points[i].y for i in front], color="#555", linestyle=":",
                  linewidth=1, zorder=1, drawstyle="steps-post")
        axes.scatter([points[i].x for i in front], [points[i].y for i in front], s=110, facecolors="none",
                     edgecolors="#555", linewidths=0.8, zorder=3)
    budget_notes = []
    if ylim:
        axes.set_ylim(*ylim)
        budget_notes = _draw_budgets(axes, points, ylim)
    axes.margins(x=0.12)
    _style_axis(axes.xaxis, x_log)
    _style_axis(axes.yaxis, y_log)
    axes.set_xlabel(xlabel + (", log scale" if x_log else ""), fontsize=8)
    axes.set_ylabel(ylabel + (", log scale" if y_log else ""), fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, alpha=0.25, which="major")
    return lambda: _label(axes, shown, texts, points, budget_notes)


def _label(axes: Any, shown: list[tuple[float, float]], texts: list[str], points: list[Point], budget_notes: list[Any]) -> None:
    """Number the points (after the layout is final: offsets are in points, positions in data)."""
    merged = group_close(axes, [s[0] for s in shown], [s[1] for s in shown], texts)
    colours = [FAIL_COLOUR if any(not points[i].passed for i in members) else "#222" for *_, members in merged]
    renderer = axes.figure.canvas.get_renderer()
    place_labels(axes, [(x, y, text) for x, y, text, _ in merged], colours,
                 obstacles=[note.get_window_extent(renderer) for note in budget_notes])


def _legend(figure: Any, points: Sequence[Point], drop: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker=BACKEND_MARKERS.get(b, "P"), color="#777", label=b)
               for b in dict.fromkeys(p.backend for p in points)]
    handles += [Line2D([], [], linestyle="", marker="s", color=FORMAT_COLOURS.get(f, "#17becf"), label=f)
                for f in dict.fromkeys(p.format for p in points)]
    if any(not p.passed for p in points):
        handles.append(Line2D([], [], linestyle="", marker="x", color=FAIL_COLOUR, label="fails its budget"))
    handles.append(Line2D([], [], linestyle=":", color="#555", marker="o", markersize=9, markerfacecolor="none",
                          label="Pareto front (passing)"))
    if drop:
        handles.append(Line2D([], [], linestyle="--", color=FAIL_COLOUR, label="budget (artifacts it applies to)"))
        handles.append(Line2D([], [], linestyle="", marker="^", color="#777", label="beyond the axis (value shown)"))
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=7, frameon=False)


def figure(points: list[Point], xlabel: str, ylabel: str, drop: bool, title: str) -> Any:
    """A matplotlib Figure, a panel per deployment target (web, mobile, server, other) that has points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets = [t for t in TARGET_ORDER if any(p.target == t for p in points)]
    result = Figure(figsize=(4.3 * len(targets) if len(targets) > 1 else 6.4, 3.9), dpi=100)
    FigureCanvasAgg(result)
    result.suptitle(title, fontsize=10)
    labellers = []
    for index, target in enumerate(targets, 1):
        axes = result.add_subplot(1, len(targets), index)
        axes.set_title(TARGET_TITLES[target], fontsize=9)
        labellers.append(_panel(axes, [p for p in points if p.target == target], xlabel, ylabel, drop))
    result.tight_layout(rect=(0, 0.08, 1, 1))
    result.canvas.draw()
    for label in labellers:
        label()
    _legend(result, points, drop)
    return result


def plot(points: list[Point], xlabel: str, ylabel: str, drop: bool, title: str) -> Optional[str]:
    """figure() as base64 PNG; None with fewer than two points."""
    if len(points) < 2:
        return None
    buffer = io.BytesIO()
    figure(points, xlabel, ylabel, drop, title).savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
