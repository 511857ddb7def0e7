"""sweep.md and sweep.html: the cells and their verdicts, a table of drops by method and model (mean and range
over the other axes, with the widest 95 % interval), and one plot per question a researcher asks:
drop against gzip size per method across models, and drop against latency per backend."""
from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any, Optional

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def _pts(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def by_method(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (artifact, backend, model): the mean drop over the cells that share them, its range, and the
    widest 95 % interval among those cells."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in table:
        if row.get("drop") is not None:
            groups[(row["artifact"], row["backend"], row.get("model"))].append(row)
    out = []
    for (artifact, backend, model), rows in sorted(groups.items(), key=lambda kv: [str(k) for k in kv[0]]):
        drops = [r["drop"] for r in rows]
        lows = [r["drop_lo"] for r in rows if r.get("drop_lo") is not None]
        highs = [r["drop_hi"] for r in rows if r.get("drop_hi") is not None]
        out.append({"artifact": artifact, "backend": backend, "model": model, "cells": len(rows),
                    "mean_drop": sum(drops) / len(drops), "min_drop": min(drops), "max_drop": max(drops),
                    "widest_ci": [min(lows), max(highs)] if lows and highs else None,
                    "failed": sum(r["verdict"] == "fail" for r in rows),
                    "gzip_bytes": rows[0].get("gzip_bytes")})
    return out


def render_sweep_markdown(sweep: dict[str, Any], table: list[dict[str, Any]]) -> str:
    lines = [f"# Sweep {sweep['name']}: {'PASSED' if sweep['passed'] else 'FAILED'}", "",
             f"{len(sweep['cells'])} cells over {', '.join(sweep['axes'])}; {sweep['steps']} distinct steps, "
             f"{sweep['cache_hits']} from the cache; {sweep['seconds']:.0f} s on the {sweep['executor']} executor.", "",
             "| cell | " + " | ".join(sweep["axes"]) + " | verdict | failed artifacts |",
             "|---|" + "---|" * len(sweep["axes"]) + "---|---|"]
    for cell in sweep["cells"]:
        verdict = "pass" if cell["passed"] else ("**ERROR**" if cell["errors"] else "**FAIL**")
        failed = ", ".join(cell["failed"]) + ("; " + "; ".join(cell["errors"]) if cell["errors"] else "")
        lines.append(f"| [{cell['name']}]({cell['path']}/report.md) | " + " | ".join(cell["axes"].values())
                     + f" | {verdict} | {failed or '–'} |")
    lines += ["", "## Top-1 drop by method and model", "",
              "Mean over the cells that share artifact, backend and model (the other axes, such as seeds), with "
              "the range of the drops and the widest 95 % interval (paired, Newcombe) among those cells. Points "
              "(0.01 = one point of top-1 lost).", "",
              "| artifact | backend | model | cells | mean drop | range | widest 95 % interval | failed |",
              "|---|---|---|---|---|---|---|---|"]
    for row in by_method(table):
        ci = row["widest_ci"]
        lines.append(f"| {row['artifact']} | {row['backend']} | {row['model']} | {row['cells']} | "
                     f"{_pts(row['mean_drop'])} | {_pts(row['min_drop'])} to {_pts(row['max_drop'])} | "
                     f"{(_pts(ci[0]) + ' to ' + _pts(ci[1])) if ci else '–'} | {row['failed']} |")
    lines += ["", "The whole table, one row per (cell, artifact, backend): `results.csv` (and `results.parquet`); "
              "`api.load(folder)` gives it as a pandas DataFrame.", ""]
    return "\n".join(lines)


def render_sweep_html(sweep: dict[str, Any], table: list[dict[str, Any]]) -> str:
    from converter.reporting.html import page

    markdown_rows = render_sweep_markdown(sweep, table).splitlines()
    body = [f"<h1>Sweep {html.escape(sweep['name'])}: "
            f"<span style=\"color:{'#2e7d32' if sweep['passed'] else '#b00020'}\">"
            f"{'PASSED' if sweep['passed'] else 'FAILED'}</span></h1>", f"<p>{html.escape(markdown_rows[2])}</p>"]
    body.append(_table(["cell", *sweep["axes"], "verdict", "failed artifacts"],
                       [[f'<a href="{html.escape(c["path"])}/report.html">{html.escape(c["name"])}</a>',
                         *[html.escape(v) for v in c["axes"].values()],
                         "pass" if c["passed"] else '<b style="color:#b00020">' + ("ERROR" if c["errors"] else "FAIL") + "</b>",
                         html.escape(", ".join(c["failed"]) + ("; " + "; ".join(c["errors"]) if c["errors"] else "") or "–")]
                        for c in sweep["cells"]]))
    body.append("<h2>Top-1 drop by method and model</h2>")
    body.append(_table(["artifact", "backend", "model", "cells", "mean drop (pts)", "range", "widest 95 % interval", "failed"],
                       [[html.escape(str(r["artifact"])), html.escape(str(r["backend"])), html.escape(str(r["model"])),
                         str(r["cells"]), _pts(r["mean_drop"]), f"{_pts(r['min_drop'])} to {_pts(r['max_drop'])}",
                         (f"{_pts(r['widest_ci'][0])} to {_pts(r['widest_ci'][1])}" if r["widest_ci"] else "–"),
                         str(r["failed"])] for r in by_method(table)]))
    images = [png for png in (drop_against_size(table), drop_against_latency(table)) if png]
    if images:
        body.append("<h2>Size, accuracy and latency across the sweep</h2>")
        body += [f'<img alt="plot" style="max-width:100%" src="data:image/png;base64,{png}">' for png in images]
    return page(f"Sweep {html.escape(sweep['name'])}", "\n".join(body))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _points(table: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    return [r for r in table if r.get(x) and r.get("drop") is not None]


def drop_against_size(table: list[dict[str, Any]]) -> Optional[str]:
    """One point per (cell, artifact) at its worst backend: gzip size against drop, colour = method, marker = model."""
    worst: dict[tuple, dict[str, Any]] = {}
    for row in _points(table, "gzip_bytes"):
        key = (row["cell"], row["artifact"])
        if key not in worst or row["drop"] > worst[key]["drop"]:
            worst[key] = row
    rows = list(worst.values())
    if len(rows) < 2:
        return None
    figure, axes = _figure(1)
    _scatter(axes[0], rows, "gzip_bytes", 1 / 1024, "gzip size (KiB, log scale)", _styles(rows))
    axes[0].set_title("top-1 drop against download size, per method and model", fontsize=10)
    _legend(figure, rows)
    return _png(figure)


def drop_against_latency(table: list[dict[str, Any]]) -> Optional[str]:
    rows = _points(table, "p50_ms")
    backends = sorted({r["backend"] for r in rows})
    if len(rows) < 2:
        return None
    figure, axes = _figure(len(backends))
    styles = _styles(rows)  # one colour per method and one marker per model in every panel, as in the legend
    for axis, backend in zip(axes, backends):
        _scatter(axis, [r for r in rows if r["backend"] == backend], "p50_ms", 1.0, "p50 latency (ms, log scale)",
                 styles)
        axis.set_title(backend, fontsize=10)
    _legend(figure, rows)
    return _png(figure)


def _figure(panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = Figure(figsize=(4.4 * columns + 2.6, 3.6 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(panels)]
    return figure, axes


def _styles(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """(colour per method, marker per model) over all the rows, so that every panel and the legend agree."""
    methods = sorted({r["artifact"] for r in rows})
    models = sorted({str(r.get("model")) for r in rows})
    return dict(zip(methods, _colours(len(methods)))), {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}


def _scatter(axis, rows: list[dict[str, Any]], x: str, scale: float, xlabel: str,
             styles: tuple[dict[str, Any], dict[str, str]]) -> None:
    colour_of, marker_of = styles
    drops = sorted(100 * r["drop"] for r in rows)
    # clip the y axis to the bulk of the points: a collapsed artifact is drawn at the edge with its value
    top = max(1.0, drops[int(0.9 * (len(drops) - 1))] * 1.3)
    for row in rows:
        y = 100 * row["drop"]
        shown = min(y, top)
        colour, marker = colour_of[row["artifact"]], marker_of[str(row.get("model"))]
        low, high = row.get("drop_lo"), row.get("drop_hi")
        if low is not None and high is not None and y <= top:
            axis.errorbar(row[x] * scale, y, yerr=[[y - 100 * low], [100 * high - y]], fmt="none", ecolor=colour,
                          alpha=0.35, lw=1, zorder=1)
        axis.scatter(row[x] * scale, shown, color=colour, marker=marker, s=36, zorder=3,
                     edgecolors="#b00020" if row["verdict"] == "fail" else "none", linewidths=1.5)
        if y > top:
            axis.annotate(f"{y:.1f}", (row[x] * scale, shown), textcoords="offset points", xytext=(0, 4), fontsize=7,
                          ha="center", color=colour)
    _log_axis(axis, [row[x] * scale for row in rows])
    axis.set_ylim(min(-0.5, min(drops) - 0.2), top * 1.08)
    axis.axhline(0, color="#999", lw=0.8)
    axis.set_xlabel(xlabel, fontsize=9)
    axis.set_ylabel("top-1 drop (points)", fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.tick_params(labelsize=8)


def _log_axis(axis, values: list[float]) -> None:
    """A log x axis with four plainly written ticks across the data (matplotlib's own labels overlap when the data
    spans less than a decade)."""
    import numpy as np
    from matplotlib.ticker import NullFormatter

    low, high = min(values), max(values)
    axis.set_xscale("log")
    if high <= low * 1.0001:
        low, high = low / 1.5, high * 1.5
    axis.set_xlim(low / (high / low) ** 0.08, high * (high / low) ** 0.08)
    ticks = sorted({float(f"{t:.2g}") for t in np.geomspace(low, high, 4)})
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.xaxis.set_minor_formatter(NullFormatter())


def _legend(figure, rows: list[dict[str, Any]]) -> None:
    from matplotlib.lines import Line2D

    colour_of, marker_of = _styles(rows)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colour_of.items()]
    handles += [Line2D([], [], marker=marker, ls="", color="#555", label=f"model {m}") for m, marker in marker_of.items()]
    handles.append(Line2D([], [], marker="o", ls="", color="#ccc", markeredgecolor="#b00020", markeredgewidth=1.5,
                          label="failed its budget"))
    figure.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 0.8, 1))


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
