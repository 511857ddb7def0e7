"""The float model after the pipeline, re-exported as a SavedModel: the reference for every other artifact."""
from __future__ import annotations

import shutil
from pathlib import Path

from converter.exports.base import ExportContext, ExportResult
from converter.model_ref import ModelRef
from converter.recipe.schema import SavedModelExport


def export(model: ModelRef, spec: SavedModelExport, out_dir: Path, ctx: ExportContext) -> ExportResult:
    shutil.copytree(model.path, out_dir, dirs_exist_ok=True)
    notes = [f"SavedModel of '{model.kind}' model, signature {model.signature}"]
    if reproducible_fingerprint(out_dir):
        notes.append("fingerprint.pb's random uuid replaced by one derived from the model's own checksums, so that "
                     "the same model gives the same bytes")
    return ExportResult(notes=notes)


def reproducible_fingerprint(folder: Path) -> bool:
    """TensorFlow writes a random `uuid` into fingerprint.pb at every save; every other field hashes the model.
    Replace it with a value derived from those hashes (the same model, the same uuid). True when rewritten."""
    path = folder / "fingerprint.pb"
    if not path.is_file():
        return False
    from converter.tf_env import tf

    tf()
    from tensorflow.core.protobuf import fingerprint_pb2

    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    derived = str((fingerprint.saved_model_checksum ^ fingerprint.checkpoint_hash) % (1 << 64))
    if fingerprint.uuid == derived:
        return False
    fingerprint.uuid = derived
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))
    return True
