"""The `convert` command. The only place that turns exceptions into exit codes:
0 every artifact passed, 1 a verification budget failed, 2 a user error (one `error:` line per problem),
3 an internal error (its traceback, and a line saying that it is a bug)."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from converter.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Convert a TensorFlow model through a YAML recipe to TF.js, TFLite and ONNX; verify and time every artifact.")

RecipeArg = typer.Argument(..., help="Recipe YAML file.")
SetOpt = typer.Option([], "--set", help="Override a recipe value: key.path=value (repeatable).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks for user errors too.")
CacheOpt = typer.Option(None, "--cache-dir", envvar="CONVERT_CACHE_DIR",
                        help="Step cache shared by every recipe (default ~/.cache/convert).")
EXIT_FAILED, EXIT_USER, EXIT_BUG = 1, 2, 3


def _version(value: bool) -> None:
    if value:
        from converter.versions import package_version

        typer.echo(f"convert {package_version('convert')}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Convert a TensorFlow model through a YAML recipe to TF.js, TFLite and ONNX; verify and time every artifact."""


def _fail(exc: BaseException, debug: bool) -> None:
    """A user error: one `error:` line per problem (exit 2); anything else propagates to main() (exit 3)."""
    if isinstance(exc, UserError):
        if debug:
            traceback.print_exception(exc)
        for problem in str(exc).splitlines() or [type(exc).__name__]:  # RecipeErrors, SweepErrors: one per line
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_USER)
    raise exc


@app.command()
def validate(recipe: Path = RecipeArg, set_: List[str] = SetOpt, debug: bool = DebugOpt,
             json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.")) -> None:
    """Check a recipe, or a sweep file and every one of its cells, without loading any model (no TensorFlow import)."""
    from converter.api import validate as validate_recipe
    from converter.sweep.cells import is_sweep_file

    if is_sweep_file(recipe):
        _validate_sweep(recipe, set_, debug, json_out)
        return
    try:
        loaded = validate_recipe(recipe, set_)
    except UserError as exc:
        if json_out:
            problems = str(exc).splitlines()
            typer.echo(json.dumps({"ok": False, "recipe": str(recipe), "errors": problems}))
        _fail(exc, debug)
    r = loaded.recipe
    if json_out:
        typer.echo(json.dumps({"ok": True, "recipe": str(recipe), "name": r.name, "hash": loaded.hash(),
                               "stages": len(r.pipeline), "exports": [e.name for e in r.exports],
                               "warnings": loaded.warnings}))
        return
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"ok: {r.name}: {len(r.pipeline)} stage(s), {len(r.exports)} export(s), hash {loaded.hash()}")


def _validate_sweep(path: Path, set_: List[str], debug: bool, json_out: bool) -> None:
    from converter.sweep.cells import expand, load_sweep

    try:
        if set_:
            raise UserError("--set: applies to recipes; a sweep file sets keys for every cell under 'set:'")
        spec = load_sweep(path)
        cells = expand(spec)
    except UserError as exc:
        if json_out:
            typer.echo(json.dumps({"ok": False, "sweep": str(path), "errors": str(exc).splitlines()}))
        _fail(exc, debug)
    if json_out:
        typer.echo(json.dumps({"ok": True, "sweep": str(path), "name": spec.name,
                               "cells": {c.name: c.loaded.hash() for c in cells}}))
        return
    axes = ", ".join(f"{axis} ({len({c.axes[axis] for c in cells})})" for axis in cells[0].axes)
    typer.echo(f"ok: sweep {spec.name}: {len(cells)} cell(s) over {axes}, every cell a valid recipe")


@app.command()
def plan(recipe: Path = RecipeArg, set_: List[str] = SetOpt, cache_dir: Optional[Path] = CacheOpt,
         no_verify: bool = typer.Option(False, "--no-verify", help="Plan without evaluation on the eval data."),
         no_benchmark: bool = typer.Option(False, "--no-benchmark", help="Plan without latency measurement."),
         debug: bool = DebugOpt) -> None:
    """Show the steps a run would take as a tree, marking those already cached (a dry run; no TensorFlow)."""
    from converter.api import plan as make_plan
    from converter.plan_view import render_plan
    from converter.store import Store, default_root

    try:
        steps = make_plan(recipe, set_, evaluate=not no_verify, benchmark=False if no_benchmark else None)
    except UserError as exc:
        _fail(exc, debug)
    typer.echo(render_plan(steps, Store(cache_dir or default_root())), nl=False)


@app.command()
def run(
    recipe: Path = RecipeArg,
    set_: List[str] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<name>)."),
    cache_dir: Optional[Path] = CacheOpt,
    force: bool = typer.Option(False, "--force", help="Recompute every step, ignoring the cache."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip evaluation on the eval data (parity checks still run)."),
    no_benchmark: bool = typer.Option(False, "--no-benchmark", help="Skip latency measurement."),
    no_explain: bool = typer.Option(False, "--no-explain", help="Do not look for where the error starts in failed "
                                    "artifacts (convert explain)."),
    quick: bool = typer.Option(False, "--quick", help="Short latency schedule."),
    rigorous: bool = typer.Option(False, "--rigorous", help="Long latency schedule."),
    summary_file: Optional[Path] = typer.Option(None, "--summary-file", help="Also write the one-line JSON summary here."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show TensorFlow's and the converters' own output "
                                 "(otherwise kept in <out>/convert.log)."),
    json_only: bool = typer.Option(False, "--json", help="Plain progress lines on stderr, the JSON summary on stdout."),
    junit_xml: Optional[Path] = typer.Option(None, "--junit-xml", help="Also write JUnit XML: one test case per "
                                             "artifact and backend."),
    debug: bool = DebugOpt,
) -> None:
    """Run a recipe: pipeline, exports, verification, benchmarks and reports.

    Under GitHub Actions (GITHUB_ACTIONS=true) failures also become annotations, and a job summary that opens
    with the verdict is appended to $GITHUB_STEP_SUMMARY."""
    from rich.console import Console

    from converter import api
    from converter.progress import ConsoleEvents, ConsoleStream
    from converter.summary_table import summary_table

    schedule = {}
    if quick:
        schedule = {"warmup_runs": 3, "warmup_seconds": 0.2, "min_runs": 10, "min_seconds": 0.5, "max_seconds": 2.0}
    elif rigorous:
        schedule = {"warmup_runs": 50, "warmup_seconds": 3.0, "min_runs": 500, "min_seconds": 10.0, "max_runs": 10000, "max_seconds": 60.0}
    stream = ConsoleStream()
    console = Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 160)
    live = console.is_terminal and not json_only and sys.stdout.isatty()
    try:
        report = api.run(recipe, set_, out=out, force=force, evaluate=not no_verify, cache_dir=cache_dir,
                         benchmark=False if no_benchmark else None, benchmark_overrides=schedule,
                         console=lambda ctx: ConsoleEvents(console, live, ctx.cache_root, ctx.judge),
                         native_log=not verbose, explain=not no_explain)
    except UserError as exc:
        _fail(exc, debug)
    summary = {
        "convert": report.data["name"], "passed": report.passed, "out": str(report.out_dir),
        "artifacts": len(report.artifacts), "failed": [a["name"] for a in report.artifacts if not a["passed"]],
        "seconds": report.data["run"]["seconds"], "cache_hits": report.data["run"]["cache_hits"],
    }
    if not json_only:
        console.print(summary_table(report.data))
    if junit_xml:
        from converter.reporting.junit import render_junit

        junit_xml.parent.mkdir(parents=True, exist_ok=True)
        junit_xml.write_text(render_junit(report.data))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from converter.reporting.github import annotations, job_summary

        for annotation in annotations(report.data):
            typer.echo(annotation)  # workflow commands on stdout, before the JSON summary line
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as handle:
                handle.write(job_summary(report.data))
    for artifact in report.artifacts:
        for reason in artifact["failures"]:
            typer.echo(f"FAIL {reason}", err=True)
    typer.echo(f"report: {report.out_dir / 'report.html'} (log: {report.out_dir / 'convert.log'})", err=True)
    line = json.dumps(summary)
    typer.echo(line)
    if summary_file:
        summary_file.write_text(line + "\n")
    raise typer.Exit(0 if report.passed else EXIT_FAILED)


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file: a base recipe and axes to vary."),
    plan_only: bool = typer.Option(False, "--plan", help="Show the cells and what is cached; run nothing."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<sweep name>)."),
    cache_dir: Optional[Path] = CacheOpt,
    executor: str = typer.Option("local", "--executor", help="'local' (this machine) or 'ray' (a Ray cluster)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Local: steps at once (default: what the "
                                       "cores and memory allow)."),
    address: Optional[str] = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray: the cluster's address."),
    mlflow: bool = typer.Option(False, "--mlflow", help="Log each cell to MLflow (./mlruns unless MLFLOW_TRACKING_URI)."),
    force: bool = typer.Option(False, "--force", help="Recompute every step, ignoring the cache."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip evaluation on the eval data."),
    no_benchmark: bool = typer.Option(False, "--no-benchmark", help="Skip latency measurement."),
    quick: bool = typer.Option(False, "--quick", help="Short latency schedule."),
    debug: bool = DebugOpt,
) -> None:
    """Run a recipe over the product of axes (models, export variants, calibration settings, seeds): one report per
    cell, one results table and one sweep report; shared steps run once. Exit 0 when every cell passed."""
    from rich.console import Console

    from converter.progress import ConsoleEvents, ConsoleStream
    from converter.sweep.run import SweepOptions, render_sweep_plan, run_sweep

    if executor not in ("local", "ray"):
        _fail(UserError(f"--executor: '{executor}' is not an executor (expected local or ray)"), debug)
    schedule = {"warmup_runs": 3, "warmup_seconds": 0.2, "min_runs": 10, "min_seconds": 0.5, "max_seconds": 2.0} if quick else {}
    options = SweepOptions(out=out, cache_dir=cache_dir, force=force, executor=executor, jobs=jobs, address=address,
                           mlflow=mlflow, evaluate=not no_verify, benchmark=False if no_benchmark else None,
                           benchmark_overrides=schedule, native_log=True)
    console = Console(file=ConsoleStream(), highlight=False, soft_wrap=True)
    try:
        if plan_only:
            typer.echo(render_sweep_plan(sweep_file, options), nl=False)
            return
        result = run_sweep(sweep_file, options, console=lambda ctx: ConsoleEvents(
            console, console.is_terminal and sys.stdout.isatty(), ctx.cache_root))
    except UserError as exc:
        _fail(exc, debug)
    for cell in result.cells:
        if not cell["passed"]:
            typer.echo(f"FAIL cell {cell['name']}: " + "; ".join(cell["failed"] + cell["errors"]), err=True)
    typer.echo(f"sweep: {result.out_dir / 'sweep.html'}; table: {result.out_dir / 'results.csv'}", err=True)
    typer.echo(json.dumps({"sweep": result.out_dir.name, "passed": result.passed, "out": str(result.out_dir),
                           "cells": len(result.cells), "failed": [c["name"] for c in result.cells if not c["passed"]]}))
    raise typer.Exit(0 if result.passed else EXIT_FAILED)


cache_app = typer.Typer(help="Inspect and prune the step cache shared by every recipe.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(cache_dir: Optional[Path] = CacheOpt) -> None:
    """Where the cache is, and its entries and bytes by step kind."""
    from converter.cache_admin import info
    from converter.store import Store, default_root

    typer.echo(info(Store(cache_dir or default_root())), nl=False)


@cache_app.command("prune")
def cache_prune(cache_dir: Optional[Path] = CacheOpt,
                older_than_days: Optional[float] = typer.Option(None, "--older-than-days", help="Remove entries not used for this many days."),
                max_size: Optional[str] = typer.Option(None, "--max-size", help="Remove the least recently used entries until the cache fits, e.g. 5GB."),
                all_: bool = typer.Option(False, "--all", help="Remove every entry."),
                debug: bool = DebugOpt) -> None:
    """Remove cache entries: all, those unused for N days, or the least recently used beyond a size."""
    from converter.cache_admin import prune
    from converter.store import Store, default_root

    try:
        typer.echo(prune(Store(cache_dir or default_root()), older_than_days, max_size, all_))
    except UserError as exc:
        _fail(exc, debug)


@app.command()
def compare(
    runs: List[Path] = typer.Argument(..., help="Run folders or report.json files; the first is the baseline unless --baseline."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="The run to compare against: its label, its path or its position (1 = first)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write compare.md, compare.html and compare.json into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON instead of Markdown."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when a top-1 change is a significant regression (its 95% interval lies below zero) or an artifact is no longer evaluated."),
    debug: bool = DebugOpt,
) -> None:
    """Runs against a baseline: top-1 change with its 95% interval, verdicts, size and latency ratios per artifact and backend."""
    from converter.reporting.compare import comparison
    from converter.reporting.compare_render import render_html, render_markdown

    try:
        data = comparison(list(runs), baseline)
    except UserError as exc:
        _fail(exc, debug)
    markdown, text = render_markdown(data), json.dumps(data, indent=2)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(markdown)
        (out / "compare.html").write_text(render_html(data))
        (out / "compare.json").write_text(text + "\n")
        typer.echo(f"wrote {out / 'compare.md'}, compare.html and compare.json", err=True)
    typer.echo(text if as_json else markdown, nl=as_json)
    for regression in data["regressions"]:
        typer.echo(f"REGRESSION {regression}", err=True)
    raise typer.Exit(1 if fail_on_regression and data["regressions"] else 0)


@app.command()
def explain(
    target: Path = typer.Argument(..., help="A recipe YAML file, or a `convert run` output folder."),
    export: str = typer.Option(..., "--export", help="The artifact to explain, by its export name."),
    backend: Optional[str] = typer.Option(None, "--backend", help="The backend (default: the first the artifact "
                                          "failed on in the run folder, else the export's first)."),
    against: Optional[str] = typer.Option(None, "--against", help="A second backend: the first tensor whose "
                                          "values differ between the two."),
    samples: int = typer.Option(32, "--samples", min=1, help="Evaluation samples the errors are measured on."),
    set_: List[str] = SetOpt,
    cache_dir: Optional[Path] = CacheOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Also write explain.json, explain.md and explain.html "
                                       "(with the SQNR plot) into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of Markdown."),
    force: bool = typer.Option(False, "--force", help="Compute the explanation again instead of reusing the cache."),
    debug: bool = DebugOpt,
) -> None:
    """Where an artifact's error starts: a layer map against the float model, each layer's local and accumulated
    error, the layers to look at first and the recipe change that keeps them at higher precision.
    Exit 0 with the explanation, 1 when the artifact cannot be explained on that backend, 2 on bad input."""
    from converter import api
    from converter.reporting.explain import render_html, render_markdown

    try:
        record = api.explain(target, export, backend, against, samples, set_, cache_dir, force,
                             log=lambda message: typer.echo(message, err=True))
    except UserError as exc:
        _fail(exc, debug)
    except api.ExplainFailed as exc:
        typer.echo(f"FAIL {exc}", err=True)
        raise typer.Exit(EXIT_FAILED)
    markdown = render_markdown(record)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "explain.json").write_text(json.dumps(record, indent=1) + "\n")
        (out / "explain.md").write_text(markdown)
        (out / "explain.html").write_text(render_html(record))
        typer.echo(f"wrote {out / 'explain.md'}, explain.html and explain.json", err=True)
    typer.echo(json.dumps(record, indent=1) if as_json else markdown, nl=as_json)


@app.command("cli-docs")
def cli_docs() -> None:
    """Print the CLI and Python API reference generated from the code (docs/cli-reference.md)."""
    from converter.cli_reference import render

    typer.echo(render(), nl=False)


@app.command("schema-docs")
def schema_docs() -> None:
    """Print the recipe reference generated from the schema (docs/recipe-reference.md)."""
    from converter.recipe.reference import render

    typer.echo(render(), nl=False)


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception:  # a bug: never reported as a failed budget or a user error
        traceback.print_exc()
        from converter.versions import package_version

        typer.echo(f"internal error: this is a bug in convert {package_version('convert')}, not a problem with your "
                   "recipe; please report it with the traceback above", err=True)
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
