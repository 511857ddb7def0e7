"""Read a recipe: YAML with line numbers, ${VAR} interpolation, --set overrides, then full validation.

Every problem is reported at once (RecipeErrors, one line each, in line order) unless the text cannot be
read at all (not YAML, an alias bomb). Nothing here imports TensorFlow; `convert validate` is this module
plus yaml_reader.py and schema.py.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from pydantic import ValidationError

from converter.errors import RecipeError, RecipeErrors
from converter.recipe.schema import FORMATS, STAGE_TYPES, Recipe
from converter.recipe.types import shown
from converter.recipe.yaml_reader import Loc, YamlReader, loc_text
from converter.suggest import did_you_mean

SET = "--set"
_INDEX = re.compile(r"[0-9]{1,9}")  # ASCII digits only: '²'.isdigit() is True but int('²') fails


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


# ----------------------------------------------------------------------------- reading
def _read_text(text: str, source: str) -> tuple[dict[str, Any], dict[Loc, int], list[tuple[Loc, RecipeError]]]:
    reader = YamlReader(source)
    data = reader.read(text)
    if data is None:
        raise RecipeError("", "the recipe is empty", None, source)
    if not isinstance(data, dict):
        raise RecipeError("", "a recipe is a mapping of keys (name, model, exports, ...)", 1, source)
    return data, reader.lines, reader.problems


def read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The recipe text as data and the line of every key path; RecipeErrors on any problem."""
    data, lines, problems = _read_text(text, source)
    if problems:
        raise RecipeErrors([error for _, error in problems])
    return data, lines


def _read_file(recipe: str | Path) -> tuple[Path, str]:
    try:
        path = Path(recipe).resolve()
        return path, path.read_text()
    except FileNotFoundError:
        raise RecipeError("", f"recipe file not found: {recipe}", None, None) from None
    except UnicodeDecodeError as exc:
        raise RecipeError("", f"cannot read recipe {recipe}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          None, None) from None
    except RuntimeError:  # Python 3.11 Path.resolve: a symbolic link loop
        raise RecipeError("", f"cannot read recipe {recipe}: symbolic link loop", None, None) from None
    except (OSError, ValueError) as exc:  # unreadable, a folder, a name too long, a NUL byte
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RecipeError("", f"cannot read recipe {recipe}: {reason}", None, None) from None


def _plain_copy(recipe: Mapping[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(json.dumps(recipe))
    except (TypeError, ValueError, RecursionError) as exc:
        raise RecipeError("", f"a recipe mapping holds only text, numbers, booleans, None, lists and mappings ({exc})",
                          None, "<dict>") from None
    if not isinstance(data, dict):
        raise RecipeError("", "a recipe is a mapping of keys (name, model, exports, ...)", None, "<dict>")
    return data


# ----------------------------------------------------------------------------- overrides
def parse_override(assignment: str) -> tuple[Loc, str]:
    """Split `key.path=value` into the key path (list indexes as ints) and the value text."""
    key, equals, text = assignment.partition("=")
    parts = [part.strip() for part in key.split(".")]
    if not equals or not key.strip():
        raise RecipeError(shown(assignment, 60), "--set needs key.path=value", None, SET)
    if "" in parts:
        raise RecipeError(shown(key.strip(), 60), "--set key path has an empty part (write key.path=value)", None, SET)
    return tuple(int(part) if _INDEX.fullmatch(part) else part for part in parts), text


def _apply(data: dict[str, Any], assignment: str) -> tuple[Loc, list[tuple[Loc, RecipeError]]]:
    """Apply one --set; return the key path as applied (dict keys as text) and the value's problems."""
    parts, text = parse_override(assignment)

    def fail(message: str) -> RecipeError:
        return RecipeError(loc_text(parts), message, None, SET)

    reader = YamlReader(SET, interpolate=False, prefix=parts, with_lines=False)
    value = reader.read(text) if text.strip() else ""
    target: Any = data
    applied: list[Any] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(target, dict):
            part = str(part)
            if last:
                target[part] = value
            elif target.get(part) is None:
                target[part] = [] if isinstance(parts[depth + 1], int) else {}
        elif isinstance(target, list):
            if not isinstance(part, int):
                raise fail(f"'{loc_text(applied) or 'the recipe'}' is a list: its items are numbered from 0, not {shown(part)}")
            if part > len(target) or (part == len(target) and not last):
                raise fail(f"no list item {part} in '{loc_text(applied)}' ({len(target)} items)")
            if last:
                target[part:part + 1] = [value]
            elif target[part] is None:
                target[part] = [] if isinstance(parts[depth + 1], int) else {}
        else:
            raise fail(f"'{loc_text(applied)}' is a plain value ({shown(target)}), not a mapping or a list")
        applied.append(part)
        if not last:
            target = target[part]
    return tuple(applied), reader.problems


def apply_override(data: dict[str, Any], assignment: str) -> Loc:
    """Apply one `key.path=value` (value parsed as YAML; list indexes are numbers); return the key path."""
    loc, problems = _apply(data, assignment)
    if problems:
        raise RecipeErrors([error for _, error in problems])
    return loc


# ----------------------------------------------------------------------------- validation errors
_UNION_TAGS = set(STAGE_TYPES) | set(FORMATS)
_MISSING = object()


def _clean_loc(loc: Loc, data: Any) -> Loc:
    """Pydantic's location as a key path of the recipe: without the union member names it inserts
    ('exports', 0, 'tflite', 'opset'; 'mean', 'list[float]', 1; 'mean', 'float')."""
    cleaned: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        more = index < len(loc) - 1
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, list) and isinstance(part, str):
            continue  # a union member's name: lists have no named items
        elif isinstance(node, dict) and part in _UNION_TAGS and more:
            continue  # the discriminated union's member
        elif node is not _MISSING and not isinstance(node, (dict, list)):
            break  # inside a plain value: the rest names union members
        else:
            node = _MISSING  # a missing or unknown key
        cleaned.append(part)
    return tuple(cleaned)


def _message(error: Mapping[str, Any]) -> tuple[Loc, str]:
    ctx = error.get("ctx") or {}
    loc: Loc = ()
    message = str(error["msg"])
    kind = error["type"]
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        loc = (str(ctx.get("discriminator", "")).strip("'"),)
        message = f"unknown value {shown(tag)}{did_you_mean(tag, expected)}"
    elif kind == "union_tag_not_found":
        loc = (str(ctx.get("discriminator", "")).strip("'"),)
        message = "missing key"
    elif kind == "missing":
        message = "missing key"
    elif kind in ("literal_error", "enum"):
        given = error.get("input")
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"{shown(given)} is not allowed{did_you_mean(str(given), expected)}"
    elif kind == "extra_forbidden":
        message = "unknown key"
    else:
        message = message[0].lower() + message[1:] if message else message
        message = re.sub(r" or instance of \w+", "", message.removeprefix("value error, "))
        if error.get("input") is None and kind.endswith("_type"):
            message += " (the value is empty)"
    return loc, message


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _validation_errors(exc: ValidationError, data: dict[str, Any], lines: Mapping[Loc, int], source: str,
                       overridden: list[Loc]) -> list[tuple[Loc, RecipeError]]:
    found: dict[Loc, list[str]] = {}
    for error in exc.errors(include_url=False):
        extra, message = _message(error)
        loc = _clean_loc(tuple(error["loc"]), data) + extra
        messages = found.setdefault(loc, [])
        if message not in messages:
            messages.append(message)  # several members of a union failed: say each
    result = []
    for loc, messages in found.items():
        message = _one_line("; or ".join(messages))
        key = loc_text(loc)
        inside = [o for o in overridden if loc[: len(o)] == o]
        holds = [o for o in overridden if loc and o[: len(loc)] == loc and o != loc]
        if inside or (holds and loc not in lines):
            result.append((loc, RecipeError(key, message, None, SET)))
            continue
        if holds:
            message += f" (with --set {loc_text(holds[0])})"
        result.append((loc, RecipeError(key, message, _line_for(loc, lines), source)))
    return result


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
    """Read, interpolate, override and validate a recipe; raise RecipeErrors listing every problem."""
    problems: list[tuple[Loc, RecipeError]] = []
    if isinstance(recipe, Mapping):
        path, source = None, "<dict>"
        data, lines = _plain_copy(recipe), {}
    else:
        path, text = _read_file(recipe)
        source = str(Path(recipe))
        data, lines, problems = _read_text(text, source)
    overridden: list[Loc] = []
    for assignment in overrides:
        try:
            loc, value_problems = _apply(data, assignment)
        except RecipeError as exc:
            problems.append(((SET, len(overridden)), exc))  # a location no recipe key has
            continue
        overridden.append(loc)
        problems.extend(value_problems)
    base_dir = path.parent if path else Path.cwd()
    try:
        validated = Recipe.model_validate(data, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as exc:
        reported = [loc for loc, _ in problems]
        problems.extend((loc, error) for loc, error in _validation_errors(exc, data, lines, source, overridden)
                        if not any(loc[: len(r)] == r for r in reported))
        validated = None
    if problems or validated is None:
        raise RecipeErrors([error for _, error in problems])
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
