"""Several runs against a baseline: one entry per (artifact, backend) and run, with the top-1 change against the
baseline run and its 95% interval, the verdicts, and which changes are significant regressions.

A run is a `convert run` output folder or a report.json file. The change in top-1 is paired (Newcombe's paired
interval, McNemar's exact test) when both evaluations carry per-sample correctness and both runs say they
evaluated the same samples in the same order (`reference.eval_data_id`); otherwise it is unpaired (Newcombe's
hybrid score interval for independent proportions), and the entry says why. A regression is a top-1 change
whose whole interval lies below zero, or an artifact the baseline evaluated that the run no longer does.
Latency and size changes are shown as ratios, never judged: latency varies between machines and loads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from converter import stats
from converter.errors import UserError
from converter.reporting.rows import machine_line, summary_rows
from converter.reporting.text import MISSING
from converter.reporting.uncertainty import evaluation_uncertainty


def load_report(path: Path) -> tuple[dict[str, Any], Path]:
    """(report dict, report.json path) of a run folder or a report.json file; UserError naming the path otherwise."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        what = "no report.json (not a finished `convert run` output folder)" if path.is_dir() else "no such file or folder"
        raise UserError(f"{path}: {what}")
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{file}: unreadable report: {error}") from None
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list):
        raise UserError(f"{file}: not a convert report (no 'artifacts' list)")
    return report, file


def run_labels(paths: list[Path], reports: list[dict[str, Any]]) -> list[str]:
    """Each run's name, or its folder where names repeat, or its position where those repeat too."""
    names = [str(r.get("name", MISSING)) for r in reports]
    if len(set(names)) == len(names):
        return names
    folders = [p.parent.name if p.name == "report.json" else p.stem if p.suffix == ".json" else p.name for p in map(Path, paths)]
    if len(set(folders)) == len(folders):
        return folders
    return [f"run {i + 1}" for i in range(len(paths))]


def pick_baseline(baseline: Optional[str], labels: list[str], paths: list[Path]) -> int:
    """The index of --baseline (a label, a path given, or a 1-based position), default the first run."""
    if baseline is None:
        return 0
    for index, (label, path) in enumerate(zip(labels, paths)):
        if baseline == label or Path(baseline).resolve() == Path(path).resolve():
            return index
    if baseline.isdigit() and 1 <= int(baseline) <= len(labels):
        return int(baseline) - 1
    raise UserError(f"--baseline {baseline}: not one of the runs ({', '.join(labels)}) nor a position 1-{len(labels)}")


def _entry(report: dict[str, Any], row: Any) -> dict[str, Any]:
    m, a = row.metrics, row.artifact
    uncertainty = evaluation_uncertainty(report, row.evaluation)
    correct = None
    if row.evaluation and row.evaluation.get("per_sample"):
        try:
            correct = stats.decode_per_sample(row.evaluation["per_sample"])
        except ValueError:
            correct = None
    return {
        "top1": m.get("top1"), "top1_ci": uncertainty.top1_ci, "top1_drop": m.get("top1_drop"),
        "samples": uncertainty.n, "passed": row.passed, "certainty": uncertainty.certainty(row.passed),
        "size_bytes": a.get("size_bytes"), "gzip_bytes": a.get("gzip_bytes"),
        "p50_ms": row.latency["p50_ms"] if row.latency else None, "threads": row.latency["threads"] if row.latency else None,
        "error": a.get("error") or (row.evaluation or {}).get("error"), "_correct": correct,
    }


def _same_samples(base: dict[str, Any], other: dict[str, Any]) -> Optional[str]:
    """None when two runs evaluated the same samples in the same order, else why pairing is not possible."""
    a, b = (base.get("reference") or {}).get("eval_data_id"), (other.get("reference") or {}).get("eval_data_id")
    if a is None or b is None:
        return "the runs do not record which samples they evaluated (reference.eval_data_id)"
    if a != b:
        return "the runs evaluated different samples"
    return None


def _ratio(new: Optional[float], base: Optional[float]) -> Optional[float]:
    return new / base if new is not None and base else None


def _delta(base: dict[str, Any], new: dict[str, Any], unpaired_because: Optional[str]) -> dict[str, Any]:
    """The change from base to new: top-1 (new - base) with its interval, regression flag, size and p50 ratios."""
    delta: dict[str, Any] = {"gzip_ratio": _ratio(new["gzip_bytes"], base["gzip_bytes"]),
                             "p50_ratio": _ratio(new["p50_ms"], base["p50_ms"]) if new["threads"] == base["threads"] else None}
    if base["top1"] is None:
        return delta
    if new["top1"] is None:
        return delta | {"regression": True, "why": "no longer evaluated" + (f": {new['error']}" if new["error"] else "")}
    paired = unpaired_because is None and base["_correct"] is not None and new["_correct"] is not None
    difference = stats.run_difference(
        {"top1": base["top1"], "n": base["samples"], "correct": base["_correct"] if paired else None},
        {"top1": new["top1"], "n": new["samples"], "correct": new["_correct"] if paired else None})
    if difference is None:
        return delta | {"top1_change": new["top1"] - base["top1"], "regression": False,
                        "why": "no sample counts: no interval"}
    ci = difference["ci"]
    change_ci = [-ci[1], -ci[0]] if ci else None
    why = None if difference["method"] == "paired" else (
        unpaired_because or "per-sample correctness missing in one of the runs")
    return delta | {"top1_change": -difference["difference"], "top1_change_ci": change_ci, "p": difference["p"],
                    "method": difference["method"], "unpaired_because": why,
                    "regression": bool(change_ci and change_ci[1] < 0),
                    "improvement": bool(change_ci and change_ci[0] > 0)}


def comparison(paths: list[Path], baseline: Optional[str] = None, labels: Optional[list[str]] = None) -> dict[str, Any]:
    """The comparison as plain data (what `convert compare --json` prints); sweep folders are compared cell by cell."""
    if not paths:
        raise UserError("compare: name at least one run folder or report.json")
    if all((Path(p) / "sweep.json").is_file() for p in paths):
        return sweep_comparison([Path(p) for p in paths], baseline)
    loaded = [load_report(Path(p)) for p in paths]
    reports = [r for r, _ in loaded]
    labels = labels or run_labels(list(paths), reports)
    base_index = pick_baseline(baseline, labels, list(paths))
    keys: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for index, (report, (_, file)) in enumerate(zip(reports, loaded)):
        try:
            for row in summary_rows(report):
                keys.setdefault((row.artifact["name"], row.backend), {})[index] = _entry(report, row)
        except (KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{file}: not a convert report ({type(error).__name__}: {error})") from None
    pairing = [_same_samples(reports[base_index], r) for r in reports]
    rows = []
    for (artifact, backend), by_run in keys.items():
        base = by_run.get(base_index)
        runs = []
        for index, label in enumerate(labels):
            entry = by_run.get(index)
            if entry is None:
                runs.append({"run": label, "present": False})
                continue
            item = {"run": label, "present": True} | {k: v for k, v in entry.items() if not k.startswith("_")}
            if index != base_index and base is not None:
                item["delta"] = _delta(base, entry, pairing[index])
            runs.append(item)
        rows.append({"artifact": artifact, "backend": backend, "runs": runs})
    regressions = [f"{r['artifact']} on {r['backend']} in {run['run']}: " + _regression_text(run["delta"])
                   for r in rows for run in r["runs"] if run.get("delta", {}).get("regression")]
    return {
        "baseline": labels[base_index], "confidence": 0.95,
        "runs": [{"label": label, "path": str(file), "name": r.get("name"), "recipe_hash": r.get("recipe_hash"),
                  "passed": r.get("passed"), "samples": (r.get("reference") or {}).get("samples"),
                  "machine": machine_line(r["machine"]) if r.get("machine") else None}
                 for label, r, (_, file) in zip(labels, reports, loaded)],
        "rows": rows, "regressions": regressions,
    }


def sweep_comparison(paths: list[Path], baseline: Optional[str] = None) -> dict[str, Any]:
    """Sweeps against a baseline sweep, cell by cell: each cell's runs compared as runs are (paired on the cell's
    own evaluation data), its rows named `<cell>/<artifact>`. A baseline cell another sweep lacks is a regression."""
    sweeps = []
    for path in paths:
        try:
            sweeps.append(json.loads((path / "sweep.json").read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{path / 'sweep.json'}: unreadable sweep: {error}") from None
    names = [str(s.get("name", MISSING)) for s in sweeps]
    labels = names if len(set(names)) == len(names) else [p.name for p in paths]
    if len(set(labels)) != len(labels):
        labels = [f"sweep {i + 1}" for i in range(len(paths))]
    base_index = pick_baseline(baseline, labels, paths)
    cells = [[c["name"] for c in s.get("cells", [])] for s in sweeps]
    rows, regressions = [], []
    for cell in cells[base_index]:
        missing = [label for label, names_ in zip(labels, cells) if cell not in names_]
        regressions += [f"cell {cell} in {label}: not in this sweep" for label in missing]
        present = [(path, label) for path, label, names_ in zip(paths, labels, cells) if cell in names_]
        if len(present) < 2:
            continue
        data = comparison([p / "cells" / cell for p, _ in present], labels[base_index], [label for _, label in present])
        rows += [{**row, "artifact": f"{cell}/{row['artifact']}"} for row in data["rows"]]
        regressions += [f"{cell}/{text}" for text in data["regressions"]]
    return {
        "baseline": labels[base_index], "confidence": 0.95, "kind": "sweep",
        "runs": [{"label": label, "path": str(path), "name": s.get("name"), "recipe_hash": None,
                  "passed": s.get("passed"), "cells": len(s.get("cells", [])),
                  "machine": machine_line(s["machine"]) if s.get("machine") else None}
                 for label, path, s in zip(labels, paths, sweeps)],
        "rows": rows, "regressions": regressions,
    }


def _regression_text(delta: dict[str, Any]) -> str:
    if "top1_change_ci" not in delta:
        return delta.get("why", "regression")
    lo, hi = delta["top1_change_ci"]
    test = f", McNemar p = {delta['p']:.2g}" if delta.get("p") is not None else f", {delta['method']}"
    return (f"top-1 {100 * delta['top1_change']:+.2f} pts (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}{test})")


def compare_runs(paths: list[Path], baseline: Optional[str] = None) -> tuple[str, str]:
    """(Markdown, HTML) of the runs side by side."""
    from converter.reporting.compare_render import render_html, render_markdown

    data = comparison(paths, baseline)
    return render_markdown(data), render_html(data)
