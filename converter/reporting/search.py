"""The search sections of report.md and report.html: per searched artifact, why it stopped, the search and held-out
scores, the trial log (with the size-against-drop frontier marked), and the final map as a pasteable `quantize:`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from converter.reporting.text import fmt

TRIAL_HEADER = ["#", "phase", "weights per dtype", "size", "of float", "weight bytes of float", "top-1 drop (pts)",
                "verdict", "frontier", "cached"]
WEIGHT_HEADER = ["weight", "dtype", "elements", "sensitivity"]


@dataclass
class SearchSection:
    name: str
    summary: list[str]  # sentences
    trials: list[list[str]]
    quantize_yaml: str
    widened: list[list[str]]  # weights not at the most compressed dtype


def sections(report: dict[str, Any]) -> list[SearchSection]:
    return [_section(a) for a in report.get("artifacts", []) if a.get("details", {}).get("search", {}).get("trials")]


def _section(artifact: dict[str, Any]) -> SearchSection:
    search = artifact["details"]["search"]
    trials = search["trials"]
    frontier = _frontier(trials)
    rows = []
    for index, trial in enumerate(trials, 1):
        dtypes = ", ".join(f"{d} {n}" for d, n in trial.get("dtypes", {}).items())
        verdict = trial.get("verdict", "")
        if index == search.get("chosen_trial"):
            verdict += " (chosen)"
        rows.append([str(index), trial.get("phase", ""), dtypes, fmt(trial.get("size_bytes"), "bytes"),
                     f"{trial['size_ratio']:.3f}" if trial.get("size_ratio") is not None else "",
                     f"{trial['weight_ratio']:.3f}" if trial.get("weight_ratio") is not None else "",
                     fmt(trial.get("top1_drop"), "pts"), verdict, "yes" if index in frontier else "",
                     "yes" if trial.get("cached") else ""])
    chosen = trials[search["chosen_trial"] - 1]
    held = [e for e in artifact.get("evaluations", []) if e.get("metrics", {}).get("top1_drop") is not None]
    held_text = "; ".join(f"{e['backend']} {fmt(e['metrics']['top1_drop'], 'pts')} pts ({e['status']})" for e in held)
    reference = search.get("holdout_reference", {})
    budget = ", ".join(f"{k} {v:g}" for k, v in search.get("budget", {}).items())
    summary = [
        f"Candidates scored in {search.get('backend')} on {search.get('search_samples')} search samples; objective "
        f"{search.get('objective')}; budget {budget}; {len(trials)} of at most {search.get('max_trials')} trials; "
        f"weights ranked by {search.get('ranking')}.",
        f"Stopped: {search.get('stop_reason')}.",
        f"Chosen: trial {search.get('chosen_trial')}, {fmt(chosen.get('size_bytes'), 'bytes')} "
        f"({chosen.get('size_ratio', 0):.3f} of the float TF.js artifact; weights "
        f"{chosen.get('weight_ratio') or 0:.3f} of the float weights), top-1 drop "
        f"{fmt(chosen.get('top1_drop'), 'pts')} pts on the search part.",
        f"Held-out part ({reference.get('samples', '?')} samples the search never saw; the verdict): "
        f"{held_text or 'not evaluated'}.",
    ]
    quantize = search.get("quantize")
    text = yaml.safe_dump({"quantize": quantize}, sort_keys=False, width=1000) if quantize else "quantize: null\n"
    base = (search.get("dtypes") or ["uint8"])[0]
    widened = [[w["name"], w["dtype"], str(w["elements"]), f"{w['sensitivity']:.4g}"]
               for w in search.get("weights", []) if w["dtype"] != base]
    return SearchSection(artifact["name"], summary, rows, text, widened)


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
        lines += table(TRIAL_HEADER, section.trials)
        lines += ["", "The chosen map, pasteable as a fixed export's `quantize:`:", "", "```yaml",
                  section.quantize_yaml.rstrip(), "```"]
        if section.widened:
            lines += ["", "Weights kept wider than the most compressed dtype:", ""] + table(WEIGHT_HEADER, section.widened)
    return lines


def html(report: dict[str, Any]) -> list[str]:
    import html as escape

    from converter.reporting.html import html_table

    parts: list[str] = []
    for section in sections(report):
        parts += [f"<h2>Search: {escape.escape(section.name)}</h2>",
                  "<p>" + "<br>".join(escape.escape(s) for s in section.summary) + "</p>",
                  html_table(TRIAL_HEADER, section.trials),
                  "<p>The chosen map, pasteable as a fixed export's <code>quantize:</code>:</p>",
                  f"<pre>{escape.escape(section.quantize_yaml)}</pre>"]
        if section.widened:
            parts += ["<p>Weights kept wider than the most compressed dtype:</p>", html_table(WEIGHT_HEADER, section.widened)]
    return parts
