"""The sweep file: a base recipe, overrides for every cell, and the axes whose product makes the cells.

    name: quantization-methods
    base: mobilenet.yaml                 # a recipe, relative to this file
    set: {verify.limit: 200}             # key paths (as in --set) with YAML values, for every cell
    axes:
      - name: model
        values:
          - {label: mobilenetv2}                                         # the base as it is
          - {label: mobilenetv3, set: {model.application: MobileNetV3Small}}
          - {label: other, recipe: other.yaml}                            # another recipe as this cell's base
      - name: seed
        key: pipeline.0.seed             # shorthand: each value is this key's value
        values: [0, 1, 2]
"""
from __future__ import annotations

import re
from typing import Any, Optional, Union

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from converter.recipe.types import ExistingPath, Strict

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class AxisValue(Strict):
    """One value of an axis: a label, and what it changes in the cell's recipe."""

    label: str = Field(..., description="Short name of the value; cells are named by their values' labels.")
    recipe: Optional[ExistingPath] = Field(None, description="A recipe to use as this cell's base instead of `base`.")
    set: dict[str, Any] = Field(default_factory=dict, description="Key paths (as in --set) and their values.")

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not LABEL.match(value):
            raise PydanticCustomError("label", "'{v}' is not a valid label: use letters, digits, '.', '_' and '-'",
                                      {"v": value})
        return value


class Axis(Strict):
    """One axis of the sweep: its values, or one key and the values it takes."""

    name: str = Field(..., description="The axis's name: a column of the results table.")
    key: Optional[str] = Field(None, description="Shorthand: the key path every plain value sets.")
    values: list[Union[AxisValue, Any]] = Field(..., min_length=1, description="The values (mappings, or plain "
                                                "values of `key`).")

    @model_validator(mode="after")
    def _values(self) -> "Axis":
        plain = [v for v in self.values if not isinstance(v, AxisValue)]
        if plain and self.key is None:
            raise PydanticCustomError("axis", "axis '{n}': plain values need 'key' (or give each value a mapping "
                                      "with label and set)", {"n": self.name})
        values = []
        for value in self.values:
            if isinstance(value, AxisValue):
                values.append(value)
            else:
                values.append(AxisValue(label=_label_of(value), set={self.key: value}))
        labels = [v.label for v in values]
        if len(set(labels)) != len(labels):
            raise PydanticCustomError("axis", "axis '{n}': labels repeat: {l}", {"n": self.name, "l": ", ".join(labels)})
        object.__setattr__(self, "values", values)
        return self


def _label_of(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_") or "value"
    return text if text[0].isalnum() else f"v{text}"


class SweepSpec(Strict):
    """A sweep: the product of its axes, each cell a recipe run."""

    name: str = Field(..., description="The sweep's name; the default output folder is runs/<name>.")
    base: ExistingPath = Field(..., description="The base recipe, relative to this file.")
    set: dict[str, Any] = Field(default_factory=dict, description="Key paths and values applied to every cell.")
    axes: list[Axis] = Field(..., min_length=1, description="The axes; cells are their product.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not LABEL.match(value):
            raise PydanticCustomError("name", "'{v}' is not a valid name: use letters, digits, '.', '_' and '-'",
                                      {"v": value})
        return value

    @model_validator(mode="after")
    def _axes(self) -> "SweepSpec":
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise PydanticCustomError("axes", "axis names repeat: {n}", {"n": ", ".join(names)})
        return self
