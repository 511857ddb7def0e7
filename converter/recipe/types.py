"""Building blocks shared by every recipe section: strict models, paths, sizes and how values are shown."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from converter.suggest import did_you_mean


def shown(value: Any, limit: int = 80) -> str:
    """A user's value as an error message shows it: its repr (so text with a newline stays on one line and
    looks like text), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "[...]" + text[-1:]


def problems(title: str, found: list[tuple[tuple[str | int, ...], str, str, dict[str, Any]]]) -> ValidationError:
    """Several problems of one validator as one ValidationError: pydantic reports each at its own location
    (relative to the model that raises it). Each item is (loc, error type, message template, context)."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError(kind, template, context), loc=loc, input=None)
        for loc, kind, template, context in found])


class Strict(BaseModel):
    """A frozen recipe section that rejects unknown keys with a did-you-mean, every one at once."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        known |= {f.alias for f in cls.model_fields.values() if f.alias}
        unknown = [key for key in data if key not in known]
        if unknown:
            raise problems(cls.__name__, [
                ((key if isinstance(key, (str, int)) else str(key),), "unknown_key", "unknown key {key}{hint}",
                 {"key": shown(str(key)), "hint": did_you_mean(str(key), known)})
                for key in unknown])
        return data


def _resolve(value: Any, info: ValidationInfo, must_exist: bool) -> Any:
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("path_type", "expected a path, got {value}", {"value": shown(value)})
    if not value.strip():
        raise PydanticCustomError("path", "the path is empty", {})
    if "\0" in value:
        raise PydanticCustomError("path", "a path cannot hold a NUL character: {value}", {"value": shown(value)})
    base = Path((info.context or {}).get("base_dir", "."))
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~name of a user who does not exist
        raise PydanticCustomError("path", "cannot expand {user}: no such user", {"user": shown(value.split("/")[0])}) from None
    if not path.is_absolute():
        path = base / path
    try:
        path = Path(str(path.resolve()))
    except RuntimeError:  # Python 3.11: a symbolic link loop
        raise PydanticCustomError("path", "symbolic link loop in {path}", {"path": shown(str(path), 200)}) from None
    except OSError as exc:
        raise PydanticCustomError("path", "cannot resolve {path}: {reason}",
                                  {"path": shown(str(path), 200), "reason": exc.strerror or str(exc)}) from None
    if must_exist and (info.context or {}).get("check_files", True):
        try:
            exists = path.exists()
        except OSError as exc:  # a component too long, a folder that cannot be searched, ...
            raise PydanticCustomError("path", "cannot access {path}: {reason}",
                                      {"path": shown(str(path), 200), "reason": exc.strerror or str(exc)}) from None
        if not exists:
            raise PydanticCustomError("missing_file", "file not found: {path}", {"path": str(path)})
    return path


ExistingPath = Annotated[Path, BeforeValidator(lambda v, info: _resolve(v, info, True))]
OutputPath = Annotated[Path, BeforeValidator(lambda v, info: _resolve(v, info, False))]

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
          "m": 1000**2, "mb": 1024**2, "mi": 1024**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1024**3, "gi": 1024**3, "gib": 1024**3}
_SIZE_HINT = "expected a size such as 4194304 or '4MB', got {value}"


def parse_size(value: Any) -> int:
    """Bytes from an int or text such as '4MB' (MB is read as MiB, as tfjs does)."""
    if isinstance(value, bool):
        raise PydanticCustomError("size", _SIZE_HINT, {"value": shown(value)})
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(str(value))
        if not match:
            raise PydanticCustomError("size", _SIZE_HINT, {"value": shown(value)})
        number = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
        if not math.isfinite(number):
            raise PydanticCustomError("size", "the size {value} is too large", {"value": shown(value)})
        size = int(number)
    if size <= 0:
        raise PydanticCustomError("size", "a size must be positive, got {value}", {"value": shown(value)})
    return size


ByteSize = Annotated[int, BeforeValidator(parse_size)]
