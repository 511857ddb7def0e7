"""Read a recipe: YAML with line numbers, ${VAR} interpolation, --set overrides, then full validation.

Nothing here imports TensorFlow; `convert validate` is this module plus schema.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml
from pydantic import ValidationError

from converter.errors import RecipeError
from converter.recipe.schema import Recipe
from converter.suggest import did_you_mean

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
Loc = tuple[Any, ...]


@dataclass
class LoadedRecipe:
    """A validated recipe plus where it came from."""

    recipe: Recipe
    path: Optional[Path]
    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def hash(self) -> str:
        """Content hash of the validated recipe (paths resolved, defaults filled)."""
        return _digest(self.recipe.model_dump(mode="json"))

    def build_hash(self, export_name: str) -> str:
        """Hash of the recipe as far as it shapes one artifact: model, data, pipeline and that export's own
        options. Budgets, benchmark settings and the other exports leave it unchanged."""
        dumped = self.recipe.model_dump(mode="json", exclude={"verify", "benchmark", "exports"})
        export = next(e for e in self.recipe.exports if e.name == export_name)
        dumped["export"] = export.model_dump(mode="json", exclude={"verify", "backends"})
        return _digest(dumped)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- YAML with lines
def _to_python(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) else key_node.value
            if key in result:
                raise RecipeError(".".join(map(str, loc + (key,))), "duplicate key", key_node.start_mark.line + 1, source)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            result[key] = _to_python(value_node, loc + (key,), lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loc + (i,), lines, source) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str):
        value = _interpolate(value, loc, lines.get(loc), source)
        if node.style is None and value != node.value:
            value = yaml.safe_load(value) if value.strip() else value  # ${N} typed like a plain scalar
    return value


def _interpolate(text: str, loc: Loc, line: Optional[int], source: str) -> str:
    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise RecipeError(".".join(map(str, loc)), f"environment variable {name} is not set (write ${{{name}:-default}} for a default)", line, source)

    return _VAR.sub(replace, text)


def read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[Loc, int]]:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError("", f"not valid YAML: {problem}", line, source) from None
    lines: dict[Loc, int] = {}
    if node is None:
        raise RecipeError("", "the recipe is empty", None, source)
    data = _to_python(node, (), lines, source)
    if not isinstance(data, dict):
        raise RecipeError("", "a recipe is a mapping of keys (name, model, exports, ...)", 1, source)
    return data, lines


# ----------------------------------------------------------------------------- overrides
def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` (value parsed as YAML; list indexes are numbers)."""
    if "=" not in assignment:
        raise RecipeError(assignment, "--set needs key.path=value", None, "--set")
    key, _, text = assignment.partition("=")
    parts = [int(p) if p.isdigit() else p for p in key.strip().split(".") if p != ""]
    if not parts:
        raise RecipeError(assignment, "--set needs key.path=value", None, "--set")
    value = yaml.safe_load(text) if text.strip() else ""
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        next_part = parts[depth + 1]
        if isinstance(target, list):
            if not isinstance(part, int) or part >= len(target):
                raise RecipeError(key, f"no list item {part} at '{'.'.join(map(str, parts[:depth]))}'", None, "--set")
            target = target[part]
        else:
            if part not in target or target[part] is None:
                target[part] = [] if isinstance(next_part, int) else {}
            target = target[part]
    last = parts[-1]
    if isinstance(target, list):
        if not isinstance(last, int) or last > len(target):
            raise RecipeError(key, f"no list item {last}", None, "--set")
        if last == len(target):
            target.append(value)
        else:
            target[last] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise RecipeError(key, "cannot set a key inside a plain value", None, "--set")


# ----------------------------------------------------------------------------- validation errors
def _first_error(exc: ValidationError, lines: Mapping[Loc, int], source: str, overridden: set[Loc]) -> RecipeError:
    error = exc.errors(include_url=False)[0]
    ctx = error.get("ctx") or {}
    loc: Loc = tuple(error["loc"])
    message = error["msg"]
    if "__loc__" in ctx:
        loc = tuple(int(p) if p.isdigit() else p for p in str(ctx["__loc__"]).split("."))
    # drop the discriminator tag pydantic inserts for unions ('exports', 0, 'tflite', 'opset')
    clean: list[Any] = []
    for part in loc:
        if clean and isinstance(clean[-1], int) and isinstance(part, str) and part in _UNION_TAGS and (
            tuple(clean) + (part,)) not in lines:
            continue
        clean.append(part)
    loc = tuple(clean)
    kind = error["type"]
    if kind == "unknown_key":
        loc = loc + (ctx["key"],)
    elif kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        loc = loc + (ctx.get("discriminator", "").strip("'"),)
        message = f"unknown value '{tag}'{did_you_mean(tag, expected)}"
    elif kind == "union_tag_not_found":
        loc = loc + (str(ctx.get("discriminator", "")).strip("'"),)
        message = "missing key"
    elif kind == "missing":
        message = "missing key"
    elif kind in ("literal_error", "enum"):
        given = error.get("input")
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"'{given}' is not allowed{did_you_mean(str(given), expected)}"
    elif kind == "extra_forbidden":
        message = "unknown key"
    else:
        message = message[0].lower() + message[1:] if message else message
        message = message.removeprefix("value error, ")
    line = _line_for(loc, lines)
    origin = "--set" if any(loc[: len(o)] == o for o in overridden) else source
    return RecipeError(".".join(map(str, loc)), message, line if origin == source else None, origin)


_UNION_TAGS = {"train", "prune", "qat", "savedmodel", "tflite", "onnx", "tfjs_graph", "tfjs_layers"}


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> Optional[int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


# ----------------------------------------------------------------------------- public
def load_recipe(
    recipe: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    check_files: bool = True,
) -> LoadedRecipe:
    """Read, interpolate, override and validate a recipe; raise RecipeError on the first problem."""
    if isinstance(recipe, Mapping):
        path, source = None, "<dict>"
        data, lines = json.loads(json.dumps(recipe)), {}
    else:
        path = Path(recipe).resolve()
        source = str(Path(recipe))
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise RecipeError("", f"recipe file not found: {recipe}", None, None) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError("", f"cannot read recipe {recipe}: {exc}", None, None) from None
        data, lines = read_yaml(text, source)
    overridden: set[Loc] = set()
    for assignment in overrides:
        apply_override(data, assignment)
        overridden.add(tuple(int(p) if p.isdigit() else p for p in assignment.partition("=")[0].strip().split(".")))
    base_dir = path.parent if path else Path.cwd()
    try:
        validated = Recipe.model_validate(data, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as exc:
        raise _first_error(exc, lines, source, overridden) from None
    loaded = LoadedRecipe(validated, path, data)
    loaded.warnings.extend(recipe_warnings(validated))
    return loaded


def recipe_warnings(recipe: Recipe) -> list[str]:
    """Findings that are allowed but usually a mistake."""
    warnings = []
    for index, export in enumerate(recipe.exports):
        if getattr(export, "format", None) == "onnx" and getattr(export, "quantization", None) == "dynamic_int8":
            warnings.append(
                f"exports.{index} ({export.name}): dynamic int8 ONNX quantizes weights only and is known to collapse "
                "convolutional models (measured: MobileNet top-1 48.8% -> 1.4%, 15x slower); use quantization: int8 "
                "(static QDQ with calibration) for conv nets")
    for role in ("train", "calibration", "eval"):
        spec = getattr(recipe.data, role)
        if spec is not None and spec.source == "synthetic" and role in ("calibration", "train"):
            warnings.append(f"data.{role}: synthetic random input makes calibration and training meaningless")
    if recipe.data.eval is None:
        warnings.append("data.eval is not set: artifacts are compared on random inputs only, with no accuracy figures")
    return warnings
