"""The `convert` command. The only place that turns exceptions into exit codes:
0 all good, 1 a verification budget failed, 2 a user error (one `error:` line), other: internal error."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from converter.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Convert a TensorFlow model through a YAML recipe to TF.js, TFLite and ONNX; verify and time every artifact.")

RecipeArg = typer.Argument(..., help="Recipe YAML file.")
SetOpt = typer.Option([], "--set", help="Override a recipe value: key.path=value (repeatable).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks for user errors too.")


def _fail(exc: BaseException, debug: bool) -> None:
    if isinstance(exc, UserError):
        if debug:
            traceback.print_exception(exc)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    raise exc


@app.command()
def validate(recipe: Path = RecipeArg, set_: List[str] = SetOpt, debug: bool = DebugOpt) -> None:
    """Check a recipe completely without loading any model (no TensorFlow import)."""
    from converter.api import validate as validate_recipe

    try:
        loaded = validate_recipe(recipe, set_)
    except UserError as exc:
        _fail(exc, debug)
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    r = loaded.recipe
    typer.echo(f"ok: {r.name}: {len(r.pipeline)} stage(s), {len(r.exports)} export(s), hash {loaded.hash()}")


@app.command()
def run(
    recipe: Path = RecipeArg,
    set_: List[str] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<name>)."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, ignoring the cache."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip evaluation on the eval data (parity checks still run)."),
    no_benchmark: bool = typer.Option(False, "--no-benchmark", help="Skip latency measurement."),
    quick: bool = typer.Option(False, "--quick", help="Short latency schedule."),
    rigorous: bool = typer.Option(False, "--rigorous", help="Long latency schedule."),
    summary_file: Optional[Path] = typer.Option(None, "--summary-file", help="Also write the one-line JSON summary here."),
    debug: bool = DebugOpt,
) -> None:
    """Run a recipe: pipeline, exports, verification, benchmarks and reports."""
    from converter import api
    from converter.progress import ProgressLog

    schedule = {}
    if quick:
        schedule = {"warmup_runs": 3, "warmup_seconds": 0.2, "min_runs": 10, "min_seconds": 0.5, "max_seconds": 2.0}
    elif rigorous:
        schedule = {"warmup_runs": 50, "warmup_seconds": 3.0, "min_runs": 500, "min_seconds": 10.0, "max_runs": 10000, "max_seconds": 60.0}
    try:
        with ProgressLog() as progress:
            report = api.run(recipe, set_, out=out, force=force, evaluate=not no_verify,
                             benchmark=False if no_benchmark else None, benchmark_overrides=schedule, log=progress.log)
    except UserError as exc:
        _fail(exc, debug)
    summary = {
        "convert": report.data["name"], "passed": report.passed, "out": str(report.out_dir),
        "artifacts": len(report.artifacts), "failed": [a["name"] for a in report.artifacts if not a["passed"]],
        "seconds": report.data["run"]["seconds"], "cache_hits": report.data["run"]["cache_hits"],
    }
    for artifact in report.artifacts:
        for reason in artifact["failures"]:
            typer.echo(f"FAIL {reason}", err=True)
    typer.echo(f"report: {report.out_dir / 'report.md'}", err=True)
    line = json.dumps(summary)
    typer.echo(line)
    if summary_file:
        summary_file.write_text(line + "\n")
    raise typer.Exit(0 if report.passed else 1)


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


if __name__ == "__main__":
    main()
