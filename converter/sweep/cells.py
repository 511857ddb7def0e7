"""Expand a sweep file into its cells, each a fully validated recipe, before anything runs."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from converter.errors import RecipeError, UserError
from converter.recipe.loader import LoadedRecipe, load_recipe, read_yaml
from converter.sweep.schema import SweepSpec


@dataclass(frozen=True)
class Cell:
    name: str  # the values' labels joined: 'mobilenetv2-int8-seed1'
    axes: dict[str, str]  # axis name -> value label
    loaded: LoadedRecipe


class SweepErrors(UserError):
    """Every cell that does not validate, one problem per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def is_sweep_file(path: Path) -> bool:
    """A YAML mapping with `axes`: a sweep, not a recipe (so that `convert validate` checks it as one)."""
    try:
        data, _ = read_yaml(Path(path).read_text(), str(path))
    except (OSError, UserError):
        return False  # unreadable or not YAML: the recipe loader says why
    return isinstance(data, dict) and "axes" in data


def load_sweep(path: Path) -> SweepSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise RecipeError("", f"cannot read sweep {path}: {error.strerror or error}") from None
    data, lines = read_yaml(text, str(path))
    try:
        return SweepSpec.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
        line = next((lines[k] for k in sorted(lines, key=len, reverse=True)
                     if ".".join(map(str, k)) and loc.startswith(".".join(map(str, k)))), None)
        raise RecipeError(loc, first["msg"].removeprefix("Value error, "), line, str(path)) from None


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of the sweep, each recipe validated; SweepErrors lists every cell that is not valid."""
    cells, problems = [], []
    for values in itertools.product(*(axis.values for axis in spec.axes)):
        labels = {axis.name: value.label for axis, value in zip(spec.axes, values)}
        name = "-".join(labels.values())
        base = next((v.recipe for v in values if v.recipe is not None), spec.base)
        overrides = {**spec.set, **{k: v for value in values for k, v in value.set.items()}}
        overrides["name"] = f"{spec.name}-{name}"
        try:
            loaded = load_recipe(base, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
        except RecipeError as error:
            where = ", ".join(f"{a}={v}" for a, v in labels.items())
            for one in getattr(error, "errors", [error]):
                text = f"{one.key} (set by the sweep): {one.message}" if one.source == "--set" else str(one)
                problems.append(f"cell {name} ({where}): {text}")
            continue
        cells.append(Cell(name, labels, loaded))
    if problems:
        raise SweepErrors(problems)
    return cells


def cell_overrides(cell: Cell) -> dict[str, Any]:
    """The cell's recipe as a flat mapping of key paths (for experiment tracking)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        else:
            flat[prefix] = value

    walk(cell.loaded.recipe.model_dump(mode="json"), "")
    return flat
