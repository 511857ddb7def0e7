"""The tidy results table: one row per (artifact, backend) of a run or of every cell of a sweep.

Written as results.csv beside report.json (and results.parquet where pandas and pyarrow are installed);
`api.load(RUN_OR_SWEEP_DIR)` reads it back as a pandas DataFrame.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

from converter.errors import DependencyError, UserError

COLUMNS = ("cell", "model", "recipe", "artifact", "format", "quantization", "backend", "target", "samples",
           "top1", "top1_lo", "top1_hi", "drop", "drop_lo", "drop_hi", "mcnemar_p", "agreement", "agreement_lo",
           "agreement_hi", "size_bytes", "gzip_bytes", "p50_ms", "p90_ms", "threads", "batch", "throughput_per_s",
           "verdict")


def rows(report: dict[str, Any], cell: Optional[str] = None, axes: Optional[dict[str, str]] = None,
         model: Optional[str] = None) -> list[dict[str, Any]]:
    """The table rows of one report (one run, or one sweep cell)."""
    from converter.backends import BACKENDS
    from converter.reporting.rows import headline_row

    out = []
    for artifact in report.get("artifacts", []):
        evaluations = artifact.get("evaluations") or [{"backend": None, "status": "error" if artifact.get("error") else None}]
        for evaluation in evaluations:
            backend = evaluation.get("backend")
            metrics = evaluation.get("metrics") or {}
            latency = headline_row(artifact, backend) if backend else None
            row = {
                "cell": cell or report.get("name"), "model": model, "recipe": report.get("name"),
                "artifact": artifact["name"], "format": artifact["format"], "quantization": artifact.get("quantization"),
                "backend": backend, "target": BACKENDS[backend].target if backend in BACKENDS else None,
                "samples": (evaluation.get("per_sample") or {}).get("n") or (report.get("reference") or {}).get("samples"),
                "top1": metrics.get("top1"), "drop": metrics.get("top1_drop"), "mcnemar_p": metrics.get("mcnemar_p"),
                "agreement": metrics.get("top1_agreement"),
                "size_bytes": artifact.get("size_bytes"), "gzip_bytes": artifact.get("gzip_bytes"),
                "p50_ms": latency and latency.get("p50_ms"), "p90_ms": latency and latency.get("p90_ms"),
                "threads": latency and latency.get("threads"), "batch": latency and latency.get("batch"),
                "throughput_per_s": latency and latency.get("throughput_per_s"),
                "verdict": _verdict(artifact, evaluation),
            }
            for name, key in (("top1", "top1_ci"), ("drop", "top1_drop_ci"), ("agreement", "top1_agreement_ci")):
                low, high = metrics.get(key) or (None, None)
                row[f"{name}_lo"], row[f"{name}_hi"] = low, high
            out.append({**(axes or {}), **{c: row[c] for c in COLUMNS}})
    return out


def _verdict(artifact: dict[str, Any], evaluation: dict[str, Any]) -> str:
    status = evaluation.get("status")
    if status in ("skipped", "error"):
        return status
    if artifact.get("error"):
        return "error"
    return "pass" if evaluation.get("passed", artifact.get("passed")) else "fail"


def to_csv(table: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in table for key in row)) or list(COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_parquet(table: list[dict[str, Any]], path: Path) -> bool:
    """Write results.parquet when pandas and pyarrow are installed; False when they are not."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    frame = _frame(table)
    tmp = path.with_name(f".convert-tmp-{path.name}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return True


def _frame(table: list[dict[str, Any]]):
    import pandas as pd

    columns = list(dict.fromkeys(key for row in table for key in row)) or list(COLUMNS)
    return pd.DataFrame(table, columns=columns)


def load(folder: Path):
    """The results table of a run or sweep folder, as a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError:
        raise DependencyError("api.load needs pandas: pip install 'convert[tables]' (make install includes it)") from None
    folder = Path(folder)
    if (folder / "results.parquet").is_file():
        try:
            return pd.read_parquet(folder / "results.parquet")
        except ImportError:
            pass
    if (folder / "results.csv").is_file():
        return pd.read_csv(folder / "results.csv")
    if (folder / "report.json").is_file():  # a run from before results.csv existed
        return _frame(rows(json.loads((folder / "report.json").read_text())))
    raise UserError(f"{folder}: no results.csv or report.json (not a convert run or sweep folder)")
