"""Render docs/recipe-reference.md from the schema, so the reference cannot drift from the code."""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from converter.recipe import schema

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Recipe (top level)", schema.Recipe),
    ("model", schema.ModelSpec),
    ("data", schema.DataSection),
    ("data.<role> (a dataset)", schema.DatasetSpec),
    ("data.<role>.preprocess", schema.Preprocess),
    ("pipeline: stage: train", schema.TrainStage),
    ("pipeline: stage: prune", schema.PruneStage),
    ("pipeline: stage: qat", schema.QatStage),
    ("exports: format: savedmodel", schema.SavedModelExport),
    ("exports: format: tflite", schema.TFLiteExport),
    ("exports: format: onnx", schema.OnnxExport),
    ("exports: format: tfjs_graph", schema.TfjsGraphExport),
    ("exports: format: tfjs_layers", schema.TfjsLayersExport),
    ("exports[].quantize (TF.js)", schema.Quantize),
    ("exports[].search (the smallest artifact within a budget)", schema.Search),
    ("exports[].search.space (TF.js)", schema.TfjsSearchSpace),
    ("exports[].verify (budget overrides)", schema.Budget),
    ("verify", schema.VerifySection),
    ("benchmark", schema.BenchmarkSection),
]


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Union:
        names = list(dict.fromkeys(type_name(a) for a in args if a is not type(None)))
        return " \\| ".join(names) if len(names) > 1 else names[0]
    if origin in (list, tuple, dict):
        inner = ", ".join(type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("PosixPath", "path").replace("Path", "path")


def default_text(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "see below" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is PydanticUndefined or field.default is None:
        return "–"
    return f"`{field.default}`"


def render() -> str:
    lines = ["# Recipe reference", "",
             "Generated from `converter/recipe/schema.py` by `make docs` (`convert schema-docs`); a test fails when it is stale.",
             "How to write a recipe: see [recipes.md](recipes.md).", ""]
    for title, model in SECTIONS:
        lines += [f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)
