"""The float model after the pipeline, re-exported as a SavedModel: the reference for every other artifact."""
from __future__ import annotations

import shutil
from pathlib import Path

from converter.exports.base import ExportContext, ExportResult
from converter.model_ref import ModelRef
from converter.recipe.schema import SavedModelExport


def export(model: ModelRef, spec: SavedModelExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    shutil.copytree(model.path, out_dir, dirs_exist_ok=True)
    return ExportResult(notes=[f"SavedModel of '{model.kind}' model, signature {model.signature}"])
