"""Read the ops a converter could not map out of its error text or log, as plain lists of op names."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

_TFLITE_SELECT = re.compile(r"^TF Select ops:\s*(.+)$", re.MULTILINE)
_TFLITE_CUSTOM = re.compile(r"^Custom ops:\s*(.+)$", re.MULTILINE)
_TFLITE_NEITHER = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_SUMMARY_OP = re.compile(r"OP=(\w+)")


@dataclass
class TFLiteMissingOps:
    """Ops TFLite has no builtin kernel for, split by what would make the conversion pass."""

    select: list[str] = field(default_factory=list)  # TF Select (Flex) has a kernel
    custom: list[str] = field(default_factory=list)  # nothing has a kernel: only allow_custom_ops

    def __bool__(self) -> bool:
        return bool(self.select or self.custom)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def tflite_missing_ops(error_text: str) -> TFLiteMissingOps:
    """Parse a TFLiteConverter error ("TF Select ops: A, B" / "Custom ops: C") into op names."""
    select = sorted({n for m in _TFLITE_SELECT.finditer(error_text) for n in _names(m.group(1))})
    custom = sorted({n for m in _TFLITE_CUSTOM.finditer(error_text) for n in _names(m.group(1))})
    if not select and not custom:
        custom = sorted(set(_TFLITE_NEITHER.findall(error_text)))
    return TFLiteMissingOps(select=select, custom=custom)


class Tf2onnxUnsupportedOps(logging.Handler):
    """Collects what tf2onnx logs while installed: 'Unsupported ops: Counter({...})' and nodes it failed on.

    Use as a context manager around a conversion; `ops` is then {op type: count} and `failed`
    [(node name, op type)].
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.ops: dict[str, int] = {}
        self.failed: list[tuple[str, str]] = []
        self._logger = logging.getLogger("tf2onnx")

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Unsupported ops: %s" and record.args:
            for op, count in dict(record.args[0] if isinstance(record.args, tuple) else record.args).items():
                self.ops[op] = self.ops.get(op, 0) + count
        elif str(record.msg).startswith("Failed to convert node") and isinstance(record.args, tuple) and record.args:
            summary = str(record.args[-1]) if len(record.args) > 2 else ""
            op = _SUMMARY_OP.search(summary)
            self.failed.append((str(record.args[0]), op.group(1) if op else "?"))

    def __enter__(self) -> "Tf2onnxUnsupportedOps":
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
