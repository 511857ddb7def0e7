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


def explain(run_dir: str | Path, artifact: str, backend: Optional[str] = None, against: Optional[str] = None,
            samples: Optional[int] = None, recipe: Optional[str | Path] = None, overrides: Iterable[str] = (),
            cache_dir: Optional[Path] = None, force: bool = False,
            log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Where the error of `artifact` starts on `backend` (default: its first failed backend, else its first one),
    for a finished run folder: the layer map, per-layer errors, ranking and suggestion (docs/explain.md).

    The run's recipe is loaded again (`recipe` overrides the path report.json records; `overrides` must repeat the
    run's --set values, its hash is checked) and the explain step runs with the run's cache: what the run computed
    is reused, and the result is cached for the next call (`force`: computed again).
    """
    from converter.reporting.compare import load_report
    from converter.executor import LocalExecutor
    from converter.plan import EXPLAIN_SAMPLES, PlanOptions, build_plan, explain_step
    from converter.progress import LogEvents
    from converter.store import Store, default_root
    from converter.suggest import did_you_mean

    report, _ = load_report(Path(run_dir))
    source = Path(recipe) if recipe else Path(report.get("recipe") or "")
    if not source.is_file():
        raise UserError(f"{run_dir}: the recipe it was made from ({source}) is not there: give it with --recipe")
    loaded = load_recipe(source, overrides)
    if loaded.hash() != report.get("recipe_hash"):
        raise UserError(f"{source} is not the recipe {run_dir} was made from (its hash differs): repeat the run's "
                        "--set values, or give the recipe it used with --recipe")
    plan_ = build_plan(loaded, PlanOptions(benchmark=False))
    export = next((e for e in plan_.exports if e.spec.name == artifact), None)
    if export is None:
        raise UserError(f"{artifact}: no such artifact in {run_dir}{did_you_mean(artifact, [e.spec.name for e in plan_.exports])}")
    if backend is None:
        evaluations = next(a for a in report["artifacts"] if a["name"] == artifact).get("evaluations", [])
        failed = [e["backend"] for e in evaluations if not e.get("passed", True) and e["backend"] in export.checks]
        backend = failed[0] if failed else next(iter(export.checks), None)
    for name, option in ((backend, "--backend"), (against, "--against")):
        if name is not None and name not in export.checks:
            raise UserError(f"{option} {name}: {artifact} is not checked on it here{did_you_mean(name, export.checks)}")
    if backend is None:
        raise UserError(f"{artifact}: no backend on this machine runs it")
    step = explain_step(plan_, export, backend, samples or EXPLAIN_SAMPLES, against)
    store = Store(Path(cache_dir) if cache_dir else default_root())
    if force:
        store.forget(step.id)
    outcome = LocalExecutor(store, events=LogEvents(log)).run(plan_, [step.id])[step.id]
    if not outcome.ok:
        raise ExplainFailed(outcome.error or "the explain step failed")
    return dict(outcome.record)


class ExplainFailed(Exception):
    """The artifact could not be explained on that backend (it does not load, or its runtime cannot read tensors)."""
