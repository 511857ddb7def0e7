"""What every exporter receives and returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np


@dataclass
class ExportContext:
    """Everything an exporter may need besides the model and its own options."""

    build_id: str = ""  # the export step's content id, written into artifacts that carry metadata (TF.js)
    class_names: Optional[list[str]] = None
    # calibration(n) -> up to n preprocessed samples (N, ...) drawn from the recipe's calibration data
    calibration: Optional[Callable[[int], np.ndarray]] = None
    warn: Callable[[str], None] = lambda message: None


@dataclass
class ExportResult:
    """What an exporter made, besides the files it wrote into its output folder."""

    notes: list[str] = field(default_factory=list)  # facts for the report ("repaired GlobalAveragePooling2D keepdims", ...)
    details: dict[str, Any] = field(default_factory=dict)  # format-specific facts (unsupported ops, sparsity, ...)


# An exporter is a function:  export(model: ModelRef, spec: <Export spec>, out_dir: Path, ctx: ExportContext) -> ExportResult
# It writes only inside out_dir (a fresh temporary folder the engine renames into place afterwards).


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`... the first not in `taken`; added to `taken`."""
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate
