"""Experiment tracking: each sweep cell (or run) as an MLflow run: its recipe as parameters, its metrics per
(artifact, backend), its report and manifest as artifacts. Local by default: a SQLite store and artifacts in
./mlruns; MLFLOW_TRACKING_URI says otherwise."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from converter.errors import DependencyError

MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value


class MlflowTracker:
    def __init__(self, experiment: str, root: Path | None = None):
        try:
            import mlflow
        except ImportError:
            raise DependencyError("--mlflow needs MLflow: pip install 'convert[mlflow]' (make install includes it)") from None
        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            root = Path(root or Path.cwd() / "mlruns").absolute()
            root.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
            if mlflow.get_experiment_by_name(experiment) is None:
                mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment)

    def log_cell(self, cell, report: dict[str, Any], folder: Path) -> str:
        """One MLflow run for one cell; returns its run id."""
        from converter.sweep.cells import cell_overrides

        params = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in cell_overrides(cell).items()}
        params.update({f"axis.{k}": v for k, v in cell.axes.items()})
        with self.mlflow.start_run(run_name=cell.name) as run:
            self.mlflow.set_tags({"convert.cell": cell.name, "convert.passed": str(report["passed"]),
                                  **{f"convert.axis.{k}": v for k, v in cell.axes.items()}})
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                self.mlflow.log_params(dict(list(params.items())[start:start + 100]))
            self.mlflow.log_metrics(metrics_of(report))
            for name in ("report.json", "manifest.json", "report.md", "report.html", "results.csv"):
                if (folder / name).is_file():
                    self.mlflow.log_artifact(str(folder / name))
            return run.info.run_id


def metrics_of(report: dict[str, Any]) -> dict[str, float]:
    """'<artifact>.<backend>.<metric>' for top-1, drop, agreement, size and p50; MLflow metric names."""
    metrics: dict[str, float] = {}
    reference = (report.get("reference") or {}).get("metrics") or {}
    if reference.get("top1") is not None:
        metrics["reference.top1"] = float(reference["top1"])
    for artifact in report.get("artifacts", []):
        name = artifact["name"]
        for key in ("size_bytes", "gzip_bytes"):
            if artifact.get(key) is not None:
                metrics[f"{name}.{key}"] = float(artifact[key])
        metrics[f"{name}.passed"] = float(bool(artifact.get("passed")))
        for evaluation in artifact.get("evaluations", []):
            values = evaluation.get("metrics") or {}
            for key in ("top1", "top1_drop", "top1_agreement"):
                if values.get(key) is not None:
                    metrics[f"{name}.{evaluation['backend']}.{key}"] = float(values[key])
        for row in artifact.get("latency", []):
            if row.get("p50_ms") is not None and not row.get("noisy"):
                metrics[f"{name}.{row['backend']}.t{row['threads']}.b{row['batch']}.p50_ms"] = float(row["p50_ms"])
    return metrics
