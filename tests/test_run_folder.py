"""The output folder is the toolkit's: no user file lost, and no manifest that vouches for bytes it did not check."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli


def recipe_for(models_dir: Path, **export) -> dict:
    return {"name": "folder", "model": {"path": str(models_dir / "tiny_conv.h5")},
            "exports": [{"name": "sm", "format": "savedmodel"}, {"name": "lite", "format": "tflite", **export}],
            "benchmark": {"enabled": False}}


def manifest_matches_disk(out: Path) -> bool:
    """Every file the manifest lists is on disk with the sha256 it states."""
    manifest = json.loads((out / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        for entry in artifact.get("files", []):
            path = out / artifact["path"] / entry["path"]
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                return False
    return True


def test_a_folder_holding_the_users_files_is_refused_untouched(models_dir, tmp_path, write_recipe):
    out = tmp_path / "mine"
    (out / "artifacts").mkdir(parents=True)
    (out / "artifacts" / "thesis.tex").write_text("years of work")
    (out / "report.md").write_text("my notes")
    (out / ".tmp-draft").write_text("draft")
    result = run_cli("run", str(write_recipe(recipe_for(models_dir))), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --out {out}: the folder holds files convert did not write")
    assert (out / "artifacts" / "thesis.tex").read_text() == "years of work"
    assert (out / "report.md").read_text() == "my notes" and (out / ".tmp-draft").read_text() == "draft"


def test_a_stranger_inside_artifacts_is_refused_and_other_files_are_left_alone(models_dir, tmp_path, write_recipe):
    recipe = write_recipe(recipe_for(models_dir))
    out = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    (out / "notes.txt").write_text("mine")  # beside what convert wrote: left alone
    assert run_cli("run", str(recipe), "--out", str(out)).returncode == 0
    assert (out / "notes.txt").read_text() == "mine"
    (out / "artifacts" / "extra").mkdir()
    refused = run_cli("run", str(recipe), "--out", str(out))
    assert refused.returncode == 2 and "artifacts/extra was not written by convert" in refused.stderr
    assert (out / "artifacts" / "extra").is_dir()


def test_out_on_a_file_is_a_user_error(models_dir, tmp_path, write_recipe):
    (tmp_path / "file").write_text("x")
    result = run_cli("run", str(write_recipe(recipe_for(models_dir))), "--out", str(tmp_path / "file"))
    assert result.returncode == 2 and result.stderr.strip() == f"error: --out {tmp_path / 'file'}: is a file, not a folder"


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder mounted with those options (needs root, as CI has)."""
    mounted = []

    def make(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_read_only_or_full_disk_is_a_user_error_that_leaves_nothing_half_written(models_dir, write_recipe, mount):
    recipe = write_recipe(recipe_for(models_dir))
    read_only = mount("ro,size=1m")
    result = run_cli("run", str(recipe), "--out", str(read_only / "run"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: --out {read_only / 'run'}: cannot write there: the file system is read-only"
    full = mount("size=64k")  # the markers fit, the artifacts do not
    result = run_cli("run", str(recipe), "--out", str(full / "run"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: --out {full / 'run'}: cannot write there: no space left on the device"
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in (full / "run").iterdir() if p.name.startswith(".convert-") and p.name != ".convert-run.json"]
    assert leftovers == [] and not (full / "run" / "manifest.json").exists()


def test_a_failed_export_leaves_no_stale_artifact_under_the_manifest(models_dir, tmp_path, write_recipe):
    out = tmp_path / "run"
    assert run_cli("run", str(write_recipe(recipe_for(models_dir))), "--out", str(out)).returncode == 0
    assert (out / "artifacts" / "lite" / "model.tflite").exists()
    broken = write_recipe(recipe_for(models_dir, quantization="int8", keep_float_nodes=["no-such-node"]) |
                          {"data": {"calibration": {"source": "synthetic", "count": 4}}}, "broken.yaml")
    result = run_cli("run", str(broken), "--out", str(out))
    assert result.returncode == 1, result.stderr[-2000:]
    lite = next(a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["name"] == "lite")
    assert lite["passed"] is False and "files" not in lite
    assert not (out / "artifacts" / "lite").exists()
    assert manifest_matches_disk(out)


def test_a_run_killed_half_way_never_leaves_a_manifest_vouching_for_other_bytes(models_dir, tmp_path, write_recipe):
    out = tmp_path / "run"
    assert run_cli("run", str(write_recipe(recipe_for(models_dir))), "--out", str(out)).returncode == 0
    changed = write_recipe(recipe_for(models_dir, quantization="float16"), "changed.yaml")
    for delay in (2.0, 6.0, 9.0):
        proc = subprocess.Popen([sys.executable, "-m", "converter", "run", str(changed), "--out", str(out)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "manifest.json").exists() or manifest_matches_disk(out), delay
    assert run_cli("run", str(changed), "--out", str(out)).returncode == 0
    assert manifest_matches_disk(out)
    assert json.loads((out / "manifest.json").read_text())["artifacts"][1]["quantization"] == "float16"
