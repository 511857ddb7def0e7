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
        console: Optional[Callable[[RunContext], Any]] = None, native_log: bool = False) -> Report:
    """Run a recipe end to end and return its report (artifacts under `out`, default runs/<name>).

    Steps are cached in `cache_dir` (default: $CONVERT_CACHE_DIR, else ~/.cache/convert), shared by every recipe.
    `events` receives the executor's events (default: `log` lines); `console(RunContext)` makes them instead, as a
    context manager. `native_log` sends TensorFlow's and the converters' own output to <out>/convert.log.
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
        counts = {"cache_hits": sum(o.cached for o in outcomes.values()),
                  "computed": sum(not o.cached and not (o.error or "").startswith("not run:") for o in outcomes.values()),
                  "cache_dir": str(store.root)}
        result = assemble(loaded, plan_, outcomes, time.perf_counter() - started, fingerprint(), counts)
        report = result.to_json()
        artifacts = {export.spec.name: outcomes[export.export.id].entry.path / "artifact" for export in plan_.exports
                     if outcomes[export.export.id].entry is not None}
        folder.publish(report, artifacts, {"report.md": render_markdown, "report.html": render_html})
    return Report(report, out_dir)


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
