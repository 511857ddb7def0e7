"""The public Python API, for notebooks and scripts; the CLI is a thin layer over it.

    from converter import api
    report = api.run("recipes/mobilenet.yaml", overrides=["verify.limit=100"])
    report.passed, report.artifact("tflite-int8")["evaluations"]
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from converter.errors import UserError
from converter.recipe.loader import LoadedRecipe, load_recipe


@dataclass
class Report:
    """The run's report.json as an object."""

    data: dict[str, Any]
    out_dir: Path

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return self.data["artifacts"]

    def artifact(self, name: str) -> dict[str, Any]:
        return next(a for a in self.artifacts if a["name"] == name)


def validate(recipe: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()) -> LoadedRecipe:
    """Every recipe check, without importing TensorFlow. Raises RecipeError."""
    return load_recipe(recipe, overrides)


def plan(recipe: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), evaluate: bool = True,
         benchmark: Optional[bool] = None, benchmark_overrides: Optional[dict[str, Any]] = None):
    """The steps a run of `recipe` would take (converter.plan.Plan), without importing TensorFlow."""
    from converter.plan import PlanOptions, build_plan

    loaded = load_recipe(recipe, overrides)
    return build_plan(loaded, PlanOptions(evaluate, benchmark, dict(benchmark_overrides or {})))


@dataclass
class RunContext:
    """What a console needs to show a run: where the cache is, and the verdict on a check as it finishes."""

    out_dir: Path
    cache_root: Path
    judge: Callable[[Any], Optional[str]]


def run(recipe: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), out: Optional[Path] = None,
        force: bool = False, evaluate: bool = True, benchmark: Optional[bool] = None,
        benchmark_overrides: Optional[dict[str, Any]] = None, cache_dir: Optional[Path] = None,
        log: Callable[[str], None] = lambda message: None, events=None,
        console: Optional[Callable[[RunContext], Any]] = None, native_log: bool = False,
        explain: bool = True) -> Report:
    """Run a recipe end to end and return its report (artifacts under `out`, default runs/<name>).

    Steps are cached in `cache_dir` (default: $CONVERT_CACHE_DIR, else ~/.cache/convert), shared by every recipe.
    `events` receives the executor's events (default: `log` lines); `console(RunContext)` makes them instead, as a
    context manager. `native_log` sends TensorFlow's and the converters' own output to <out>/convert.log.
    `explain`: find where the error starts for every failed (artifact, backend) (docs/explain.md).
    """
    from converter.assemble import Judge, assemble
    from converter.benchmark.machine import fingerprint
    from converter.executor import LocalExecutor
    from converter.plan import PlanOptions, build_plan
    from converter.progress import LogEvents, NativeOutput, nothing
    from converter.reporting.html import render_html
    from converter.reporting.markdown import render_markdown
    from converter.run_folder import RunFolder
    from converter.run_lock import hold
    from converter.store import Store, default_root

    started = time.perf_counter()
    loaded = load_recipe(recipe, overrides)
    out_dir = Path(out or Path("runs") / loaded.recipe.name).absolute()
    folder = RunFolder(out_dir)
    folder.claim()
    with hold(out_dir), (NativeOutput(out_dir / "convert.log") if native_log else nothing()):
        plan_ = build_plan(loaded, PlanOptions(evaluate, benchmark, dict(benchmark_overrides or {})))
        store = Store(Path(cache_dir) if cache_dir else default_root())
        executor = LocalExecutor(store, force, events or LogEvents(log))
        if console is not None:
            executor.events = console(RunContext(out_dir, store.root, Judge(loaded, plan_, executor.outcomes)))
        with executor.events if console is not None else nothing():
            outcomes = executor.run(plan_, list(plan_.steps))
            if explain:
                from converter.explain.failures import explain_failures

                explain_failures(loaded, plan_, outcomes, executor)
        counts = {"cache_hits": sum(o.cached for o in outcomes.values()),
                  "computed": sum(not o.cached and not (o.error or "").startswith("not run:") for o in outcomes.values()),
                  "cache_dir": str(store.root)}
        result = assemble(loaded, plan_, outcomes, time.perf_counter() - started, fingerprint(), counts)
        report = result.to_json()
        artifacts = {export.spec.name: outcomes[export.export.id].entry.path / "artifact" for export in plan_.exports
                     if outcomes[export.export.id].entry is not None}
        folder.publish(report, artifacts, {"report.md": render_markdown, "report.html": render_html})
    return Report(report, out_dir)


def explain(target: str | Path, export: str, backend: Optional[str] = None, against: Optional[str] = None,
            samples: Optional[int] = None, overrides: Iterable[str] = (), cache_dir: Optional[Path] = None,
            force: bool = False, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Where the error of the artifact `export` starts on `backend`: the layer map against the float model, each
    layer's accumulated and local error, the ranking and the recipe change to try (docs/explain.md).

    `target` is a recipe (default backend: the export's first) or a `convert run` output folder, whose recipe is
    loaded again (`overrides` must repeat the run's --set values: its hash is checked; default backend: the first
    the artifact failed on). The steps it needs (export, ...) come from the cache or are computed; the result is
    cached for the next call (`force`: computed again). UserError for an unknown export or backend.
    """
    from converter.executor import LocalExecutor
    from converter.plan import EXPLAIN_SAMPLES, PlanOptions, build_plan, explain_step
    from converter.progress import LogEvents
    from converter.store import Store, default_root

    target = Path(target)
    report = None
    if target.is_dir() or target.suffix == ".json":
        from converter.reporting.compare import load_report

        report, _ = load_report(target)
        source = Path(report.get("recipe") or "")
        if not source.is_file():
            raise UserError(f"{target}: the recipe it was made from ({source}) is not there: give the recipe instead")
        loaded = load_recipe(source, overrides)
        if loaded.hash() != report.get("recipe_hash"):
            raise UserError(f"{source} has changed since {target} was made (its hash differs; repeat the run's "
                            "--set values): give the recipe instead")
    else:
        loaded = load_recipe(target, overrides)
    plan_ = build_plan(loaded, PlanOptions(benchmark=False))
    chosen = _explained_export(plan_, export)
    backend = backend or _default_backend(chosen, report)
    for name, option in ((backend, "--backend"), (against, "--against")):
        if name is not None:
            _check_backend(chosen, name, option)
    step = explain_step(plan_, chosen, backend, samples or EXPLAIN_SAMPLES, against)
    store = Store(Path(cache_dir) if cache_dir else default_root())
    if force:
        store.forget(step.id)
    outcome = LocalExecutor(store, events=LogEvents(log)).run(plan_, [step.id])[step.id]
    if not outcome.ok:
        raise ExplainFailed(outcome.error or "the explain step failed")
    return dict(outcome.record)


def _explained_export(plan_, name: str):
    from converter.suggest import did_you_mean

    found = next((e for e in plan_.exports if e.spec.name == name), None)
    if found is None:
        raise UserError(f"--export {name}: no such export in {plan_.recipe.name}"
                        f"{did_you_mean(name, [e.spec.name for e in plan_.exports])}")
    return found


def _default_backend(export, report) -> str:
    """The first backend the artifact failed on in `report`, else the export's first checked backend (of those
    whose runtime reads intermediate tensors)."""
    from converter.explain.failures import reads_tensors

    if report is not None:
        artifact = next((a for a in report["artifacts"] if a.get("name") == export.spec.name), {})
        failed = [e["backend"] for e in artifact.get("evaluations", [])
                  if e.get("status") == "failed" and e.get("backend") in export.checks and reads_tensors(e["backend"])]
        if failed:
            return failed[0]
    if not export.checks:
        why = "; ".join(f"{b}: {w}" for b, w in export.skipped.items())
        raise UserError(f"--export {export.spec.name}: no backend on this machine runs it" + (f" ({why})" if why else ""))
    able = [b for b in export.checks if reads_tensors(b)]
    if not able:
        raise UserError(f"--export {export.spec.name}: none of its backends ({', '.join(export.checks)}) can read "
                        "intermediate tensors")
    return able[0]


def _check_backend(export, name: str, option: str) -> None:
    from converter.suggest import did_you_mean

    from converter.explain.failures import reads_tensors

    if name in export.checks and not reads_tensors(name):
        able = [b for b in export.checks if reads_tensors(b)]
        raise UserError(f"{option} {name}: its runtime cannot read intermediate tensors"
                        + (f" (explain runs on: {', '.join(able)})" if able else ""))
    if name in export.checks:
        return
    if name in export.skipped:
        raise UserError(f"{option} {name}: not available for {export.spec.name} here: {export.skipped[name]}")
    raise UserError(f"{option} {name}: {export.spec.name} ({export.spec.format}) does not run on it"
                    f"{did_you_mean(name, export.checks)}")


class ExplainFailed(Exception):
    """The artifact could not be explained on that backend (it does not load, or its runtime cannot read tensors)."""


def sweep(sweep_file: str | Path, out: Optional[Path] = None, executor: str = "local", jobs: Optional[int] = None,
          address: Optional[str] = None, mlflow: bool = False, cache_dir: Optional[Path] = None, force: bool = False,
          progress: bool = True):
    """Run a sweep (converter/sweep/) from a notebook or script; returns a SweepResult (`.frame()` is the table).

    progress=True shows a progress bar where one can be drawn (a terminal, or Jupyter through rich)."""
    from rich.console import Console

    from converter.progress import ConsoleEvents
    from converter.sweep.run import SweepOptions, run_sweep

    options = SweepOptions(out=Path(out) if out else None, cache_dir=cache_dir, force=force, executor=executor,
                           jobs=jobs, address=address, mlflow=mlflow)
    console = Console(highlight=False)
    show = (lambda ctx: ConsoleEvents(console, console.is_terminal or console.is_jupyter, ctx.cache_root)) if progress else None
    return run_sweep(Path(sweep_file), options, console=show)


def load(folder: str | Path):
    """The results table of a run or sweep folder as a pandas DataFrame: one row per (cell, artifact, backend)."""
    from converter.results import load as load_table

    return load_table(Path(folder))
