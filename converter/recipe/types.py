"""Building blocks shared by every recipe section: strict models, paths and sizes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from converter.suggest import did_you_mean


class Strict(BaseModel):
    """A frozen recipe section that rejects unknown keys with a did-you-mean."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        known |= {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key not in known:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key '{key}'{hint}",
                    {"key": str(key), "hint": did_you_mean(str(key), known)},
                )
        return data


def _resolve(value: Any, info: ValidationInfo, must_exist: bool) -> Any:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("path_type", "expected a path, got {value!r}", {"value": value})
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    path = Path(str(path.resolve()))
    if must_exist and (info.context or {}).get("check_files", True) and not path.exists():
        raise PydanticCustomError("missing_file", "file not found: {path}", {"path": str(path)})
    return path


ExistingPath = Annotated[Path, BeforeValidator(lambda v, info: _resolve(v, info, True))]
OutputPath = Annotated[Path, BeforeValidator(lambda v, info: _resolve(v, info, False))]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
          "m": 1000**2, "mb": 1024**2, "mi": 1024**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1024**3, "gi": 1024**3, "gib": 1024**3}


def parse_size(value: Any) -> int:
    """Bytes from an int or text such as '4MB' (MB is read as MiB, as tfjs does)."""
    if isinstance(value, bool):
        raise PydanticCustomError("size", "expected a size such as 4194304 or '4MB', got {value!r}", {"value": value})
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise PydanticCustomError("size", "expected a size such as 4194304 or '4MB', got {value!r}", {"value": value})
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if size <= 0:
        raise PydanticCustomError("size", "a size must be positive, got {value!r}", {"value": value})
    return size


ByteSize = Annotated[int, BeforeValidator(parse_size)]
