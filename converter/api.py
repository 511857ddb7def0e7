"""The public Python API, for notebooks and scripts; the CLI is a thin layer over it.

    from converter import api
    report = api.run("recipes/mobilenet.yaml", overrides=["verify.limit=100"])
    report.passed, report.artifacts[0]["evaluations"]
"""
from __future__ import annotations

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


def run(recipe: str | Path | Mapping[str, Any], overrides: Iterable[str] = (), out: Optional[Path] = None,
        force: bool = False, evaluate: bool = True, benchmark: Optional[bool] = None,
        benchmark_overrides: Optional[dict[str, Any]] = None,
        log: Callable[[str], None] = lambda message: None) -> Report:
    """Run a recipe end to end and return its report (artifacts under `out`, default runs/<name>)."""
    from converter.engine import Engine, RunOptions
    from converter.run_lock import hold

    loaded = load_recipe(recipe, overrides)
    options = RunOptions(out_dir=out, force=force, evaluate=evaluate, benchmark=benchmark,
                         benchmark_overrides=benchmark_overrides or {}, log=log)
    engine = Engine(loaded, options)
    with hold(engine.out_dir):
        data = engine.run()
    return Report(data, engine.out_dir)
