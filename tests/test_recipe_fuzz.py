"""Property-based fuzz of the recipe loader and of --set: whatever the text, the overrides or the mapping,
the loader either returns a recipe whose hashes can be computed or raises a UserError whose every line is
one line naming a key. Anything else (a traceback) fails.

The default suite runs a few hundred derandomized examples (no TensorFlow import: the loader imports
none); `pytest -m fuzz` runs the long randomized ones (CONVERT_FUZZ_EXAMPLES each, default 3000).
"""
from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from converter.errors import RecipeError, RecipeErrors, UserError
from converter.recipe.loader import load_recipe
from converter.recipe.reference import SECTIONS
from converter.recipe.schema import KERAS_APPLICATIONS

QUICK = 120
DEEP = int(os.environ.get("CONVERT_FUZZ_EXAMPLES", "3000"))
SIZES = [pytest.param(QUICK, id="quick"),
         pytest.param(DEEP, id="deep", marks=[pytest.mark.fuzz, pytest.mark.slow])]


def _settings(examples: int):
    return settings(max_examples=examples, derandomize=examples == QUICK, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------- vocabulary
def _literals(annotation: Any) -> set[str]:
    found: set[str] = set()
    if typing.get_origin(annotation) is typing.Literal:
        found |= {str(a) for a in typing.get_args(annotation)}
    for arg in typing.get_args(annotation):
        found |= _literals(arg)
    return found


FIELDS = sorted({name for _, model in SECTIONS for name in model.model_fields})
WORDS = sorted({value for _, model in SECTIONS for f in model.model_fields.values() for value in _literals(f.annotation)}
               | {"source", "train", "pruned", "MobileNetV2", "m.h5", "photos", "*", "1MB", "1/127.5"})
ODD_TEXT = ["", " ", "~", "~nosuchuser-convert/x.h5", "a" * 300 + "/m.h5", "/", ".", "..", "../" * 30, "/dev/null",
            "a\x00b", "ok\n", "\t", "\u202e", "\ufeff", "${CONVERT_FUZZ_LIST}", "${CONVERT_FUZZ_UNSET}", "${CONVERT_FUZZ_INT}",
            "${CONVERT_FUZZ_BROKEN:-[}", "1/0", "1e400/1e-400", "9" * 400 + "MB", "4MB\n", "-1", "0x1F", "1:30", ".nan",
            "2024-01-01", "yes", "no", "null", "*", "&", "!!binary", "<<", "{x}", "{0}", "'", '"', "\\", "%", "@", "`"]
ENV = {"CONVERT_FUZZ_LIST": "[1, 2", "CONVERT_FUZZ_INT": "7", "CONVERT_FUZZ_MAP": "{a: [1, {b: *x}]}",
       "CONVERT_FUZZ_TAG": "!!python/object/apply:os.system ['true']", "CONVERT_FUZZ_BIG": "9" * 5000}

scalars = st.one_of(
    st.integers(), st.integers(min_value=-(10**4000), max_value=10**4000), st.floats(), st.booleans(), st.none(),
    st.text(max_size=12), st.sampled_from(WORDS), st.sampled_from(ODD_TEXT), st.sampled_from(FIELDS))
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(ODD_TEXT), st.text(max_size=6))
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=24)

BASE: dict[str, Any] = {
    "name": "fuzz",
    "model": {"application": "MobileNetV2", "args": {"alpha": 0.35, "input_shape": [32, 32, 3]}},
    "data": {"train": {"source": "digits"}, "eval": {"source": "folder", "path": "photos",
                                                     "preprocess": {"resize": [8, 8], "scale": "1/16"}}},
    "pipeline": [{"stage": "train", "epochs": 1}, {"stage": "prune", "name": "pruned", "input": "train"}],
    "exports": [{"name": "t", "format": "tflite", "quantization": "int8"},
                {"name": "o", "format": "onnx", "model": "pruned"},
                {"name": "w", "format": "tfjs_graph", "shard_size": "1MB", "quantize": {"uint8": ["*"]}}],
    "verify": {"max_top1_drop": 0.02},
    "benchmark": {"threads": [1]},
}

# Text put into a serialized recipe: YAML features a careful user or an attacker reaches for.
SNIPPETS = [
    "x: &a [1, 2]\n", "y: *a\n", "<<: {name: merged}\n", "<<: [*a]\n", "z: &r {k: *r}\n", "? [a, b]\n: 1\n",
    "{a: 1}: 2\n", "n: !!binary aGk=\n", "n: !!python/object/apply:os.system ['true']\n", "n: !custom x\n",
    "n: !!set {a, b}\n", "n: !!timestamp 2024-01-01\n", "n: !!int abc\n", "n: !!int " + "9" * 5000 + "\n",
    "n: !!bool maybe\n", "n: !!float x\n", "n: ${CONVERT_FUZZ_MAP}\n", "n: ${CONVERT_FUZZ_TAG}\n",
    "n: ${CONVERT_FUZZ_BIG}\n", "n: ${CONVERT_FUZZ_UNSET}\n", "n:\n", "? \n", "~: 1\n", "'': 1\n",
    "b: &b [&c [x, x, x, x, x, x, x, x], [*c, *c, *c, *c, *c, *c, *c, *c]]\n", "--- \n", "...\n", "%YAML 1.1\n",
    "n: " + "[" * 80 + "]" * 80 + "\n", "n: \x07\n", "n: |\n  text\n", "\t\n", "n: 'unclosed\n",
]
TOKENS = SNIPPETS + [f"{f}: " for f in FIELDS[:40]] + [
    "\n", "  ", "    ", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "*b", "!!str ", "<<: ", "? ", "#", "|", ">",
    "'", '"', "1", "-1", "1.5", "true", "null", "~", "tflite", "int8", "MobileNetV2", "${CONVERT_FUZZ_INT}", "\x00"]


# ----------------------------------------------------------------------------- the property
def check_outcome(call) -> None:
    """`call()` loads a recipe: it returns a LoadedRecipe whose hashes work, or raises a UserError."""
    try:
        loaded = call()
    except RecipeErrors as exc:
        assert exc.errors and str(exc) == "\n".join(str(e) for e in exc.errors)
        for error in exc.errors:
            assert "\n" not in str(error) and "\r" not in str(error), repr(str(error))
            assert "!r}" not in str(error), str(error)
        return
    except RecipeError as exc:
        assert "\n" not in str(exc) and "!r}" not in str(exc), repr(str(exc))
        return
    except UserError:
        return
    loaded.hash()
    for export in loaded.recipe.exports:
        loaded.build_hash(export.name)
        loaded.recipe.export_model(export)
    for index, _ in enumerate(loaded.recipe.pipeline):
        loaded.recipe.stage_input(index)
    loaded.recipe.main_line()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "photos" / "a").mkdir(parents=True)
    (folder / "m.h5").write_bytes(b"")
    return folder


@pytest.fixture(autouse=True)
def hostile_environment(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CONVERT_FUZZ_UNSET", raising=False)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, prefix + (index,))
    return found


@st.composite
def mutated_recipes(draw, leaves=trees) -> dict[str, Any]:
    """The valid BASE recipe with a few subtrees replaced, removed or added."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(leaves)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(leaves)
        else:
            parent.append(draw(leaves))
    return data


@st.composite
def recipe_texts(draw) -> str:
    data = draw(mutated_recipes())
    text = yaml.safe_dump(data, default_flow_style=draw(st.booleans()), allow_unicode=draw(st.booleans()),
                          sort_keys=False)
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(SNIPPETS)))
    return "".join(lines)


assignments = st.builds(
    lambda parts, equals, value: ".".join(parts) + equals + value,
    st.lists(st.one_of(st.sampled_from(FIELDS + ["exports", "0", "1", "2", "7", "-1", "²", "٣", " ", "", "9" * 30]),
                       st.text(max_size=4)), min_size=0, max_size=5),
    st.sampled_from(["=", "=", "=", "", "=="]),
    st.one_of(st.sampled_from(ODD_TEXT + SNIPPETS + WORDS), st.text(max_size=10),
              trees.map(lambda t: yaml.safe_dump(t, default_flow_style=True).strip())))

odd_leaves = st.one_of(trees, st.tuples(st.integers()), st.just({1, 2}), st.just(b"\xff"), st.just(object()),
                       st.just(Path("/tmp")), st.dictionaries(st.integers(), st.integers(), max_size=2))


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("examples", SIZES)
def test_recipe_files(examples, workdir):
    recipe = workdir / "recipe.yaml"

    @_settings(examples)
    @given(recipe_texts())
    def check(text):
        recipe.write_text(text)
        check_outcome(lambda: load_recipe(recipe))

    check()


@pytest.mark.parametrize("examples", SIZES)
def test_yaml_token_soup(examples, workdir):
    recipe = workdir / "soup.yaml"

    @_settings(examples)
    @given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
    def check(text):
        recipe.write_text(text)
        check_outcome(lambda: load_recipe(recipe))

    check()


@pytest.mark.parametrize("examples", SIZES)
def test_set_overrides(examples, workdir):
    recipe = workdir / "base.yaml"
    recipe.write_text(yaml.safe_dump(BASE, sort_keys=False))

    @_settings(examples)
    @given(st.lists(assignments, min_size=1, max_size=3))
    def check(overrides):
        check_outcome(lambda: load_recipe(recipe, overrides))

    check()


@pytest.mark.parametrize("examples", SIZES)
def test_mappings_from_python(examples, workdir, monkeypatch):
    monkeypatch.chdir(workdir)

    @_settings(examples)
    @given(mutated_recipes(odd_leaves), st.lists(assignments, max_size=2))
    def check(data, overrides):
        check_outcome(lambda: load_recipe(data, overrides))

    check()


def test_base_recipe_is_valid(workdir):
    """The mutations start from a recipe that passes every check, so they reach the deep validators."""
    recipe = workdir / "valid.yaml"
    recipe.write_text(yaml.safe_dump(BASE, sort_keys=False))
    loaded = load_recipe(recipe)
    assert [e.name for e in loaded.recipe.exports] == ["t", "o", "w"]
    assert isinstance(loaded.recipe, BaseModel) and KERAS_APPLICATIONS
