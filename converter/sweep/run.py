"""Run a sweep: every cell's plan merged into one, so that a step shared by several cells runs once; then one
report per cell (cells/<cell>/), one results table and one sweep report for all of them."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from converter.sweep.cells import Cell, expand, load_sweep


@dataclass(frozen=True)
class SweepOptions:
    out: Optional[Path] = None  # default runs/<sweep name>
    cache_dir: Optional[Path] = None
    force: bool = False
    executor: str = "local"  # 'local' or 'ray'
    jobs: Optional[int] = None  # local: steps at once (default: what cores and memory allow)
    address: Optional[str] = None  # ray: the cluster (default RAY_ADDRESS, else a local one)
    mlflow: bool = False
    evaluate: bool = True
    benchmark: Optional[bool] = None
    benchmark_overrides: dict[str, Any] = field(default_factory=dict)
    native_log: bool = False  # TensorFlow's, the converters' and Ray's own output to <out>/convert.log, off the console


@dataclass
class SweepResult:
    out_dir: Path
    cells: list[dict[str, Any]]  # name, axes, passed, failed artifacts, error
    table: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.cells)

    def frame(self):
        from converter.results import load

        return load(self.out_dir)


def default_jobs() -> int:
    """Steps at once on this machine: one per core, but no more TensorFlow processes than memory holds (~3 GB each)."""
    import psutil

    return max(1, min(os.cpu_count() or 1, int(psutil.virtual_memory().available / 3e9)))


def plan_sweep(path: Path, options: SweepOptions):
    """(spec, cells, plan per cell, merged plan) without running anything."""
    from converter.plan import Plan, PlanOptions, build_plan

    spec = load_sweep(path)
    cells = expand(spec)
    plan_options = PlanOptions(options.evaluate, options.benchmark, dict(options.benchmark_overrides))
    plans = {cell.name: build_plan(cell.loaded, plan_options) for cell in cells}
    merged = Plan(recipe=cells[0].loaded.recipe)
    for cell_plan in plans.values():
        for step_id, step in cell_plan.steps.items():
            merged.steps.setdefault(step_id, step)
    return spec, cells, plans, merged


def render_sweep_plan(path: Path, options: SweepOptions) -> str:
    from converter.store import Store, default_root

    spec, cells, plans, merged = plan_sweep(path, options)
    store = Store(options.cache_dir or default_root())
    cached = {step_id for step_id in merged.steps if store.has(step_id)}
    total = sum(len(p.steps) for p in plans.values())
    lines = [f"sweep {spec.name}: {len(cells)} cells, {len(merged.steps)} distinct steps ({total - len(merged.steps)} "
             f"shared between cells), {len(cached)} cached, {len(merged.steps) - len(cached)} to run (cache {store.root})"]
    for cell in cells:
        steps = plans[cell.name].steps
        here = sum(step_id in cached for step_id in steps)
        axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items())
        lines.append(f"  {cell.name:40} {axes:40} {len(steps):4} steps, {here:4} cached")
    return "\n".join(lines) + "\n"


def run_sweep(path: Path, options: SweepOptions = SweepOptions(),
              console: Optional[Callable[[Any], Any]] = None) -> SweepResult:
    from converter.api import RunContext
    from converter.assemble import Judge, assemble
    from converter.benchmark.machine import fingerprint
    from converter.progress import LogEvents, NativeOutput, nothing
    from converter.run_folder import RunFolder, write_json, write_results, write_text
    from converter.run_lock import hold
    from converter.store import Store, default_root
    from converter.sweep.report import render_sweep_html, render_sweep_markdown

    started = time.perf_counter()
    spec, cells, plans, merged = plan_sweep(path, options)
    out_dir = Path(options.out or Path("runs") / spec.name).absolute()
    folder = RunFolder(out_dir)
    folder.claim()
    with hold(out_dir), (NativeOutput(out_dir / "convert.log") if options.native_log else nothing()):
        store = Store(options.cache_dir or default_root())
        executor = _executor(options, store)
        if console is not None:
            executor.events = console(RunContext(out_dir, store.root, lambda outcome: None))
        with executor.events if console is not None else nothing():
            outcomes = executor.run(merged, list(merged.steps))
        machine = fingerprint()
        summaries, table = [], []
        tracker = _tracker(spec.name) if options.mlflow else None
        for cell in cells:
            cell_plan = plans[cell.name]
            counts = {"cache_hits": sum(outcomes[s].cached for s in cell_plan.steps),
                      "computed": sum(not outcomes[s].cached for s in cell_plan.steps), "cache_dir": str(store.root)}
            result = assemble(cell.loaded, cell_plan, outcomes, time.perf_counter() - started, machine, counts)
            report = result.to_json()
            report["sweep"] = {"name": spec.name, "cell": cell.name, "axes": cell.axes}
            rows = _publish_cell(out_dir / "cells" / cell.name, report, cell_plan, outcomes, cell)
            table += rows
            errors = sorted({o.error for s in cell_plan.steps if (o := outcomes[s]).error and o.error.startswith("error:")})
            summaries.append({"name": cell.name, "axes": cell.axes, "passed": result.passed and not errors,
                              "failed": [a.name for a in result.artifacts if not a.passed], "errors": errors,
                              "path": f"cells/{cell.name}"})
            if tracker is not None:
                tracker.log_cell(cell, report, out_dir / "cells" / cell.name)
        sweep = {"name": spec.name, "sweep_file": str(Path(path).resolve()), "passed": all(c["passed"] for c in summaries),
                 "cells": summaries, "axes": [a.name for a in spec.axes], "executor": options.executor,
                 "seconds": round(time.perf_counter() - started, 2), "steps": len(merged.steps),
                 "cache_hits": sum(o.cached for o in outcomes.values()), "machine": machine}
        write_json(out_dir / "sweep.json", sweep)
        write_results(out_dir, {}, table)
        write_text(out_dir / "sweep.md", render_sweep_markdown(sweep, table))
        write_text(out_dir / "sweep.html", render_sweep_html(sweep, table))
    return SweepResult(out_dir, summaries, table)


def _publish_cell(folder: Path, report: dict[str, Any], plan, outcomes, cell: Cell) -> list[dict[str, Any]]:
    from converter import results
    from converter.reporting.html import render_html
    from converter.reporting.markdown import render_markdown
    from converter.run_folder import RunFolder, write_text

    run_folder = RunFolder(folder)
    run_folder.claim()
    artifacts = {e.spec.name: outcomes[e.export.id].entry.path / "artifact" for e in plan.exports
                 if outcomes[e.export.id].entry is not None}
    run_folder.publish(report, artifacts, {"report.md": render_markdown, "report.html": render_html})
    write_text(folder / "recipe.yaml", _recipe_yaml(cell))
    return results.rows(report, cell=cell.name, axes=cell.axes, model=report.get("model"))


def _recipe_yaml(cell: Cell) -> str:
    """The cell's whole recipe, so that `convert run cells/<cell>/recipe.yaml` runs that cell alone (same hash)."""
    import yaml

    header = (f"# Cell {cell.name} of a sweep ({', '.join(f'{k}={v}' for k, v in cell.axes.items())}), as a recipe: "
              f"hash {cell.loaded.hash()}.\n")
    return header + yaml.safe_dump(cell.loaded.recipe.model_dump(mode="json", exclude_unset=True), sort_keys=False)


def _executor(options: SweepOptions, store):
    if options.executor == "ray":
        from converter.ray_executor import RayExecutor

        return RayExecutor(store, options.force, keep_going=True, address=options.address)
    from converter.executor import LocalExecutor

    return LocalExecutor(store, options.force, keep_going=True, jobs=options.jobs or default_jobs())


def _tracker(name: str):
    from converter.sweep.tracking import MlflowTracker

    return MlflowTracker(name)
