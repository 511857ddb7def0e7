"""The search sections of report.md and report.html: per searched artifact, why it stopped, the search and held-out
scores, the trial log (with the size-against-drop frontier marked), and the final map in recipe terms, pasteable as a
fixed export (TF.js: `quantize:`; TFLite: `keep_float_nodes:`; ONNX: `exclude_nodes:`); report.html also plots the
trials (converter/reporting/search_plot.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import yaml

from converter.reporting.text import fmt

TRIAL_HEADER = ["#", "phase", "items per level", "size", "of float", "weight bytes of float", "top-1 drop (pts)",
                "verdict", "frontier", "cached"]
WEIGHT_HEADER = ["item", "level", "weight elements", "sensitivity"]


@dataclass
class SearchSection:
    name: str
    summary: list[str]  # sentences
    trials: list[list[str]]
    header: list[str]  # TRIAL_HEADER, with the p50 latency under objective: latency
    quantize_yaml: str  # the chosen map as recipe keys
    keys: str  # which keys: 'quantize', 'keep_float_nodes'
    widened: list[list[str]]  # items not at the most compressed level
    kind: str  # 'weight', 'node'
    artifact: Optional[dict[str, Any]] = None  # the report's entry (report.html plots its trials)


def sections(report: dict[str, Any]) -> list[SearchSection]:
    return [_section(a) for a in report.get("artifacts", []) if a.get("details", {}).get("search", {}).get("trials")]


def _section(artifact: dict[str, Any]) -> SearchSection:
    search = artifact["details"]["search"]
    trials = search["trials"]
    frontier = _frontier(trials)
    timed = search.get("objective") == "latency"
    rows = []
    for index, trial in enumerate(trials, 1):
        dtypes = ", ".join(f"{d} {n}" for d, n in trial.get("dtypes", {}).items())
        verdict = trial.get("verdict", "")
        if index == search.get("chosen_trial"):
            verdict += " (chosen)"
        phase = trial.get("phase", "") + (f" ({trial['variant']})" if trial.get("variant") else "")
        rows.append([str(index), phase, dtypes, fmt(trial.get("size_bytes"), "bytes"),
                     f"{trial['size_ratio']:.3f}" if trial.get("size_ratio") is not None else "",
                     f"{trial['weight_ratio']:.3f}" if trial.get("weight_ratio") is not None else "",
                     fmt(trial.get("top1_drop"), "pts"), verdict, "yes" if index in frontier else "",
                     "yes" if trial.get("cached") else ""])
        if timed:
            latency = trial.get("latency", {})
            rows[-1].insert(6, f"{latency['p50_ms']:.3g}" if latency.get("p50_ms") is not None else "")
    chosen = trials[search["chosen_trial"] - 1]
    held = [e for e in artifact.get("evaluations", []) if e.get("metrics", {}).get("top1_drop") is not None]
    held_text = "; ".join(f"{e['backend']} {fmt(e['metrics']['top1_drop'], 'pts')} pts ({e['status']})" for e in held)
    reference = search.get("holdout_reference", {})
    budget = ", ".join(f"{k} {v:g}" for k, v in search.get("budget", {}).items())
    summary = [
        f"Candidates scored in {search.get('backend')} on {search.get('search_samples')} search samples; objective "
        f"{search.get('objective')}; budget {budget}; {len(trials)} of at most {search.get('max_trials')} trials; "
        f"{search.get('item_kind', 'weight')}s ranked by {search.get('ranking')}.",
        f"Stopped: {search.get('stop_reason')}.",
        f"Chosen: trial {search.get('chosen_trial')}, {fmt(chosen.get('size_bytes'), 'bytes')} "
        f"({chosen.get('size_ratio', 0):.3f} of the float artifact"
        + (f"; weights {chosen['weight_ratio']:.3f} of the float weights" if chosen.get("weight_ratio") else "")
        + "), top-1 drop "
        f"{fmt(chosen.get('top1_drop'), 'pts')} pts on the search part.",
        f"Held-out part ({reference.get('samples', '?')} samples the search never saw; the verdict): "
        f"{held_text or 'not evaluated'}.",
    ]
    keys = search.get("recipe") or {"quantize": search.get("quantize")}
    text = yaml.safe_dump(keys, sort_keys=False, width=1000)
    base = (search.get("levels") or search.get("dtypes") or ["uint8"])[0]
    items = search.get("nodes") or search.get("weights", [])
    widened = [[w["name"], w.get("level", w.get("dtype")), str(w["elements"]),
                f"{w['sensitivity']:.4g}" if w.get("searched", True) else "fixed (corrected bias)"]
               for w in items if w.get("level", w.get("dtype")) != base]
    if timed:
        backend = next((t["latency"]["backend"] for t in trials if t.get("latency")), search.get("backend"))
        summary.insert(1, f"Objective latency: each candidate that held the budget was timed on {backend} (1 thread, "
                          "batch 1, p50 of at least 50 runs); the fastest is chosen.")
    header = TRIAL_HEADER[:6] + ["p50 latency (ms)"] + TRIAL_HEADER[6:] if timed else TRIAL_HEADER
    return SearchSection(artifact["name"], summary, rows, header, text, ", ".join(f"`{k}:`" for k in keys), widened,
                         search.get("item_kind", "weight"), artifact)


def _frontier(trials: list[dict[str, Any]]) -> set[int]:
    """Trial numbers that no other trial beats on both size and drop (among those that ran)."""
    points = [(i, t["size_bytes"], t["top1_drop"]) for i, t in enumerate(trials, 1)
              if t.get("size_bytes") is not None and t.get("top1_drop") is not None]
    return {i for i, size, drop in points
            if not any(s <= size and d <= drop and (s < size or d < drop) for _, s, d in points)}


def markdown(report: dict[str, Any]) -> list[str]:
    from converter.reporting.markdown import table

    lines: list[str] = []
    for section in sections(report):
        lines += ["", f"## Search: {section.name}", ""] + [" ".join(section.summary), ""]
        lines += table(section.header, section.trials)
        lines += ["", f"The chosen map, pasteable as a fixed export's {section.keys}:", "", "```yaml",
                  section.quantize_yaml.rstrip(), "```"]
        if section.widened:
            lines += ["", f"{section.kind.capitalize()}s kept wider than the most compressed level:", ""] \
                + table(WEIGHT_HEADER, section.widened)
    return lines


def html(report: dict[str, Any]) -> list[str]:
    import html as escape

    from converter.reporting.html import html_table

    parts: list[str] = []
    for section in sections(report):
        parts += [f"<h2>Search: {escape.escape(section.name)}</h2>",
                  "<p>" + "<br>".join(escape.escape(s) for s in section.summary) + "</p>",
                  *_plot(section),
                  html_table(section.header, section.trials),
                  f"<p>The chosen map, pasteable as a fixed export's {escape.escape(section.keys)}:</p>",
                  f"<pre>{escape.escape(section.quantize_yaml)}</pre>"]
        if section.widened:
            parts += [f"<p>{section.kind.capitalize()}s kept wider than the most compressed level:</p>",
                      html_table(WEIGHT_HEADER, section.widened)]
    return parts


def _plot(section: SearchSection) -> list[str]:
    from converter.reporting.search_plot import plot

    png = plot(section.artifact) if section.artifact else None
    alt = f"search {section.name}: top-1 drop against size per trial"
    return [f'<div class="plots"><img alt="{alt}" src="data:image/png;base64,{png}"></div>'] if png else []
