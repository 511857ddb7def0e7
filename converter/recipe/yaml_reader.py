"""YAML text to plain data (dict, list, str, int, float, bool, None), with the line of every value.

Only what a recipe needs: the core scalar types, lists, mappings, anchors, aliases and merge keys (`<<`).
Refused, each naming its key and line: other tags (`!!binary`, `!!python/...`, `!custom`), keys that are
not plain text, recursive aliases, nesting deeper than MAX_DEPTH, and aliases that expand to more than
MAX_VALUES values (an alias bomb: a few hundred bytes can name millions of values). Expansion stops at
the limit, so a bomb costs milliseconds.

`${VAR}` and `${VAR:-default}` are replaced from the environment in text values; a plain (unquoted) value
that held a variable is then typed as YAML types a plain scalar (`limit: ${N}` gives an int).
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

import yaml

from converter.errors import RecipeError
from converter.recipe.types import shown

MAX_DEPTH = 64
MAX_VALUES = 100_000

Loc = tuple[Any, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TAG = "tag:yaml.org,2002:"
_STR, _TIMESTAMP, _MERGE = _TAG + "str", _TAG + "timestamp", _TAG + "merge"
_SCALAR_TAGS = {_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_RESOLVER = yaml.resolver.Resolver()


def loc_text(loc: Loc) -> str:
    """A key path as messages show it: `exports.0.name`; odd keys (control characters, very long) as repr."""
    parts = []
    for part in loc:
        text = str(part)
        parts.append(text if text.isprintable() and len(text) <= 60 else shown(text, 60))
    return ".".join(parts)


class YamlReader:
    """Reads one YAML text. Problems that do not stop the reading (a refused tag, a duplicate or complex key,
    an unset variable) are collected in `problems` as (key path, RecipeError); the others raise RecipeError."""

    def __init__(self, source: str, interpolate: bool = True, prefix: Loc = (), with_lines: bool = True):
        self.source = source
        self.interpolate = interpolate
        self.prefix = prefix
        self.with_lines = with_lines
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[Loc, RecipeError]] = []
        self._budget = MAX_VALUES
        self._active: set[int] = set()

    # ------------------------------------------------------------------ errors
    def _line(self, mark: Any) -> Optional[int]:
        return mark.line + 1 if self.with_lines and mark is not None else None

    def error(self, loc: Loc, message: str, mark: Any = None) -> RecipeError:
        return RecipeError(loc_text(loc), message, self._line(mark), self.source)

    def _too_large(self, loc: Loc, what: str) -> RecipeError:
        """The budget is spent: name the key written in the recipe whose value expands (not the anchor)."""
        top = loc[: len(self.prefix) + (0 if self.prefix else 1)]
        return RecipeError(loc_text(top), f"{what} expand to more than {MAX_VALUES} values; refused (an alias bomb?)",
                           self.lines.get(top), self.source)

    def problem(self, loc: Loc, message: str, mark: Any = None) -> None:
        self.problems.append((loc, self.error(loc, message, mark)))

    # ------------------------------------------------------------------ reading
    def read(self, text: str) -> Any:
        """The document's data (None for an empty document)."""
        try:
            self._check_nesting(text)
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = self._line(mark)
            if line is None and self.with_lines and getattr(exc, "position", None) is not None:  # ReaderError
                line = text.count("\n", 0, exc.position) + 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(loc_text(self.prefix), f"not valid YAML: {problem}", line, self.source) from None
        if node is None:
            return None
        return self._convert(node, self.prefix, 0)

    def _check_nesting(self, text: str) -> None:
        """Refuse deep nesting from the event stream, before the (recursive) composer sees it."""
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise self.error(self.prefix, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1

    def _convert(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise self._too_large(loc, "its aliases")
        if depth > MAX_DEPTH:
            raise self.error(loc, f"nested more than {MAX_DEPTH} levels deep (through aliases)", node.start_mark)
        if self.with_lines:
            self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self._active:
            raise self.error(loc, "a recursive alias: the value contains itself", node.start_mark)
        expected = _TAG + ("seq" if isinstance(node, yaml.SequenceNode) else "map")
        if node.tag != expected:
            self.problem(loc, f"YAML tag {_tag(node.tag)} is not allowed in a recipe", node.start_mark)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self._convert(item, loc + (index,), depth + 1) for index, item in enumerate(node.value)]
            return self._mapping(node, loc, depth)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node, explicit in self._pairs(node, loc):
            key = self._key(key_node, loc)
            if key is None:
                continue
            if key in result:
                if explicit:
                    self.problem(loc + (key,), "duplicate key", key_node.start_mark)
                continue  # a merged key never overrides one written here (YAML merge semantics)
            if self.with_lines:
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
            result[key] = self._convert(value_node, loc + (key,), depth + 1)
        return result

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's (key, value, written here) pairs: its own first, then those of `<<` merges, in order."""
        own, merged = [], []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                own.append((key_node, value_node, True))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for merged_node in sources:
                if not isinstance(merged_node, yaml.MappingNode):
                    self.problem(loc + ("<<",), "a merge key (<<) takes a mapping or a list of mappings",
                                 merged_node.start_mark)
                    continue
                if id(merged_node) in self._active:
                    raise self.error(loc, "a recursive alias: the mapping merges itself", merged_node.start_mark)
                self._active.add(id(merged_node))
                try:
                    pairs = self._pairs(merged_node, loc)
                finally:
                    self._active.discard(id(merged_node))
                self._budget -= len(pairs)
                if self._budget < 0:
                    raise self._too_large(loc, "its merge keys")
                merged.extend((k, v, False) for k, v, _ in pairs)
        return own + merged

    def _key(self, node: yaml.Node, loc: Loc) -> Optional[str]:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(loc, "a key must be plain text, not a list or a mapping", node.start_mark)
            return None
        if node.tag not in _SCALAR_TAGS:
            self.problem(loc + (node.value,), f"YAML tag {_tag(node.tag)} is not allowed in a recipe", node.start_mark)
            return None
        return node.value  # keys are text as written: `1:` is the key '1'

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self.problem(loc, f"YAML tag {_tag(node.tag)} is not allowed in a recipe", node.start_mark)
            return node.value
        if node.tag == _TIMESTAMP:
            return node.value  # a date stays the text it was written as (JSON and the schema have no dates)
        try:
            value = _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        except (ValueError, KeyError, IndexError, OverflowError):
            kind = node.tag.removeprefix(_TAG)
            self.problem(loc, f"{shown(node.value)} is not a valid {kind}", node.start_mark)
            return node.value
        if self.interpolate and isinstance(value, str) and "${" in value:
            text = self._interpolate(value, loc, node.start_mark)
            if text != value:
                return plain_scalar(text) if node.style is None else text
        return value

    def _interpolate(self, text: str, loc: Loc, mark: Any) -> str:
        unset: list[str] = []

        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            unset.append(name)
            return match.group(0)

        result = _VAR.sub(replace, text)
        for name in unset:
            self.problem(loc, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)", mark)
        return result


def _tag(tag: str) -> str:
    return shown("!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag)


def plain_scalar(text: str) -> Any:
    """Text typed as YAML types an unquoted scalar ('32' -> 32, 'true' -> True); text otherwise, never a
    list, mapping or date."""
    stripped = text.strip()
    if not stripped:
        return text
    tag = _RESOLVER.resolve(yaml.ScalarNode, stripped, (True, False))
    if tag in (_STR, _TIMESTAMP) or tag not in _SCALAR_TAGS:
        return text
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, stripped))
    except (ValueError, KeyError, IndexError, OverflowError):
        return text
