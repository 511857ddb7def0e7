"""The "Where the error starts" section of report.md and report.html, and the page `convert explain` writes: per
explained (artifact, backend), the verdict, a table of the layers to look at first, the layers the map could not
match, the suggestion in recipe terms, and (report.html) the SQNR plot of converter.reporting.explain_plot."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

from converter.reporting.text import MISSING

HEADER = ["rank", "layer", "op", "local SQNR dB", "accumulated dB", "input dB", "error", "noise share",
          "weight SQNR dB", "what is unusual"]
NOTE = ("local: what the layer adds by itself (its ops fed the float model's inputs); accumulated: the artifact's "
        "activation against the float model's; input: the accumulated SQNR of what the layer reads; weight SQNR: "
        "what the stored weights' quantization step allows.")


def explained(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label 'artifact on backend', explain record) of every evaluation carrying one, in report order."""
    found = []
    for artifact in report.get("artifacts", []):
        for evaluation in artifact.get("evaluations", []):
            if evaluation.get("explain"):
                found.append((f"{artifact['name']} on {evaluation['backend']}", evaluation["explain"]))
    return found


def rows(record: dict[str, Any]) -> list[list[str]]:
    """The table: the suggested layers, then the rest of the top of the ranking."""
    by_layer = {r["layer"]: r for r in record.get("layers", [])}
    order = list(dict.fromkeys([*(record.get("suggested") or []), *(record.get("ranking") or [])]))
    shares = record.get("shares") or {}
    table = []
    for layer in order:
        row = by_layer.get(layer)
        if row is None:
            continue
        local = (row.get("local") or {}).get("sqnr_db")
        creates = row.get("creates")
        table.append([str(row.get("rank", MISSING)), layer, row.get("op") or MISSING, _db(local),
                      _db(row["accumulated"]["sqnr_db"]), _db(row.get("input_sqnr_db")),
                      MISSING if creates is None else ("creates" if creates else "inherits"),
                      f"{shares[layer]:.0%}" if layer in shares else MISSING,
                      _db((row.get("weights") or {}).get("sqnr_db_estimate")), "; ".join(row.get("flags") or []) or MISSING])
    return table


def _db(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.1f}"


def facts(record: dict[str, Any]) -> list[str]:
    """One line each: the map's coverage and what it could not match, how local error was measured, the
    instrumentation check, and the backend divergence."""
    lines = []
    the_map = record.get("map") or {}
    source = record.get("source") or {}
    unmatched = the_map.get("unmatched") or []
    coverage = (f"Layer map: {the_map.get('matched', 0)} of {source.get('layers', '?')} source layers matched to a "
                f"tensor ({the_map.get('verified_by_rerun', 0)} verified by re-running their ops), "
                f"{len(the_map.get('fused') or {})} computed inside the next matched layer's ops, "
                f"{len(the_map.get('identity') or {})} passing their input through")
    lines.append(coverage + ("; not matched: " + "; ".join(f"{u['layer']} ({u['reason']})" for u in unmatched)
                             if unmatched else "; every layer accounted for") + ".")
    if record.get("local_method"):
        lines.append(f"Local error: {record['local_method']}.")
    check = record.get("instrumentation") or {}
    if "output_sqnr_db" in check:
        lines.append(f"Reading the tensors: the output read with them is {check['output_sqnr_db']:.1f} dB from the "
                     "deployed run's (200 = identical).")
    divergence = record.get("divergence")
    if divergence:
        first = divergence.get("first")
        lines.append(f"Against {divergence['against']}: " + (
            f"the first tensor that differs (SQNR below {divergence['threshold_db']:g} dB) is {first['tensor']}"
            + (f" (layer {first['layer']})" if first.get("layer") else "") + f", at {first['sqnr_db']:.1f} dB."
            if first else f"every tensor agrees within {divergence['threshold_db']:g} dB."))
    return lines


def _suggestion(record: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(what it is, the YAML of the recipe change) for this export, if any."""
    suggestion = record.get("suggestion") or {}
    if not suggestion.get("yaml"):
        return None
    if suggestion.get("enough", True):
        return "Suggested recipe change for this export (predicted to be enough):", suggestion["yaml"]
    return ("The blamed layers kept at higher precision (not predicted to be enough alone, to try all the same):",
            suggestion["yaml"])


# ----------------------------------------------------------------------------- markdown
def markdown_lines(label: str, record: dict[str, Any], level: str = "###") -> list[str]:
    from converter.reporting.markdown import table

    if "error" in record and "layers" not in record:
        return [f"{level} {label}", "", f"Could not be explained: {record['error']}", ""]
    lines = [f"{level} {label}", "", record.get("verdict", ""), ""]
    found = rows(record)
    if found:
        lines += table(HEADER, found) + [""]
    change = _suggestion(record)
    if change:
        lines += [change[0], "", "```yaml", change[1], "```", ""]
    lines += [f"- {line}" for line in facts(record)] + [""]
    return lines


def markdown_section(report: dict[str, Any]) -> list[str]:
    items = explained(report)
    if not items:
        return []
    lines = ["", "## Where the error starts", "", NOTE, ""]
    for label, record in items:
        lines += markdown_lines(label, record)
    return lines[:-1] if lines[-1] == "" else lines


def render_markdown(record: dict[str, Any]) -> str:
    """The page of one explain record (`convert explain`)."""
    label = f"{record.get('artifact', 'artifact')} on {record.get('backend', '?')}"
    return "\n".join([f"# Where the error starts: {label}", "", NOTE, "", *markdown_lines("Verdict", record, "##")]) + "\n"


# ----------------------------------------------------------------------------- html
def html_block(label: str, record: dict[str, Any]) -> list[str]:
    from converter.reporting.html import bullet_list, html_table

    if "error" in record and "layers" not in record:
        return [f"<h3>{html.escape(label)}</h3>", f"<p>Could not be explained: {html.escape(record['error'])}</p>"]
    parts = [f"<h3>{html.escape(label)}</h3>", f"<p>{html.escape(record.get('verdict', ''))}</p>"]
    found = rows(record)
    if found:
        parts.append(html_table(HEADER, found))
    change = _suggestion(record)
    if change:
        parts.append(f"<p>{html.escape(change[0])}</p><pre>{html.escape(change[1])}</pre>")
    parts.append(bullet_list(facts(record)))
    return parts


def plot_block(items: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    from converter.reporting.explain_plot import plot

    png = plot(items)
    return [f'<div class="plots"><img alt="SQNR along the network" src="data:image/png;base64,{png}"></div>'] if png else []


def html_section(report: dict[str, Any]) -> list[str]:
    items = explained(report)
    if not items:
        return []
    parts = ["<h2>Where the error starts</h2>", f"<p>{html.escape(NOTE)}</p>", *plot_block(items)]
    for label, record in items:
        parts += html_block(label, record)
    return parts


def render_html(record: dict[str, Any]) -> str:
    from converter.reporting.html import page

    label = f"{record.get('artifact', 'artifact')} on {record.get('backend', '?')}"
    body = [f"<h1>Where the error starts: {html.escape(label)}</h1>", f"<p>{html.escape(NOTE)}</p>",
            *plot_block([(label, record)]), *html_block("Verdict", record)]
    return page(f"explain {html.escape(label)}", "\n".join(body))
