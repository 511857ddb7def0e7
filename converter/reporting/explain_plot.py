"""The plot of where the error starts: SQNR along the network's depth (the float model's layer order), one line
per explained artifact and backend. The solid line is the accumulated SQNR (the artifact's activation against the
float model's); the dotted line of the same colour is the local SQNR (what each layer adds by itself, highest
values clipped at the top); red crosses mark the layers the verdict blames, named in red under the axis (every layer is named when there are at
most MAX_NAMED)."""
from __future__ import annotations

import base64
import io
from typing import Any, Optional, Sequence

from converter.reporting.plots import FAIL_COLOUR, FORMAT_COLOURS

MAX_NAMED = 40  # up to this many layers, every one is named under the axis
TOP_DB = 70.0  # local SQNR of layers the quantization leaves exact (~100-200 dB) is drawn at this ceiling
BACKEND_STYLES = {"tfjs-wasm": (0, (5, 2)), "tfjs-cpu": "-", "onnxruntime": "-", "tflite": "-", "tf": "-"}


def figure(lines: Sequence[tuple[str, dict[str, Any]]]) -> Any:
    """`lines`: (label, explain record) pairs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    result = Figure(figsize=(13, 4.8), dpi=100)
    FigureCanvasAgg(result)
    axes = result.add_subplot(1, 1, 1)
    names: dict[int, str] = {}
    blamed_depths: set[int] = set()
    palette = ["#2ca02c", "#ff7f0e", "#1f77b4", "#9467bd", "#8c564b", "#17becf"]
    lowest = 0.0
    for index, (label, record) in enumerate(lines):
        rows = sorted(record.get("layers", []), key=lambda r: r["depth"])
        if not rows:
            continue
        colour = palette[index % len(palette)] if len(lines) > 1 else \
            FORMAT_COLOURS.get(record.get("format", ""), palette[0])
        style = BACKEND_STYLES.get(record.get("backend", ""), "-")
        xs = [r["depth"] for r in rows]
        accumulated = [r["accumulated"]["sqnr_db"] for r in rows]
        axes.plot(xs, [min(v, TOP_DB) for v in accumulated], color=colour, linestyle=style, linewidth=1.6,
                  marker="o", markersize=2.5, label=f"{label}: accumulated")
        local = [(r["depth"], min(r["local"]["sqnr_db"], TOP_DB)) for r in rows if r.get("local")]
        if local:
            axes.plot([d for d, _ in local], [v for _, v in local], color=colour, linestyle=":", linewidth=1.1,
                      alpha=0.85, label=f"{label}: local")
        blamed = set(record.get("suggested") or record.get("ranking", [])[:1])
        marked = [r for r in rows if r["layer"] in blamed]
        for row in rows:
            names.setdefault(row["depth"], row["layer"])
        blamed_depths.update(row["depth"] for row in marked)
        axes.scatter([r["depth"] for r in marked], [min(r["accumulated"]["sqnr_db"], TOP_DB) for r in marked],
                     marker="x", s=70, color=FAIL_COLOUR, linewidths=1.8, zorder=5)
        axes.scatter([r["depth"] for r in marked if r.get("local")],
                     [min(r["local"]["sqnr_db"], TOP_DB) for r in marked if r.get("local")],
                     marker="x", s=40, color=FAIL_COLOUR, linewidths=1.2, zorder=5)
        lowest = min(lowest, *accumulated, *[v for _, v in local])
    axes.set_ylim(min(-5.0, lowest - 3), TOP_DB + 4)
    axes.axhline(0, color="#888", linewidth=0.6)
    ticks = sorted(names) if len(names) <= MAX_NAMED else sorted(blamed_depths)  # every layer, or the blamed ones
    axes.set_xticks(ticks)
    axes.set_xticklabels([names[t] for t in ticks], rotation=35, ha="right", fontsize=7)
    for label, tick in zip(axes.get_xticklabels(), ticks):
        if tick in blamed_depths:
            label.set_color(FAIL_COLOUR)
    axes.set_xlabel("the float model's layers in order (blamed layers in red)", fontsize=8)
    axes.set_ylabel(f"SQNR against the float model (dB; local capped at {TOP_DB:g})", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(True, alpha=0.25)
    handles, labels = axes.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], linestyle="", marker="x", color=FAIL_COLOUR, label="blamed layer (suggested set)"))
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes.set_title("Where the error starts: SQNR along the network", fontsize=10)
    result.tight_layout()
    return result


def plot(lines: Sequence[tuple[str, dict[str, Any]]]) -> Optional[str]:
    """figure() as a base64 PNG; None when no record has layers."""
    if not any(record.get("layers") for _, record in lines):
        return None
    buffer = io.BytesIO()
    figure(lines).savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
