"""The output folder of a run: whose it is, and how a finished run is published into it.

The folder is the toolkit's: a folder that holds anything convert did not write is refused, and inside its own
folder convert touches only what it wrote (the marker file lists it). A run publishes only at its end:
manifest.json is removed first, the new artifacts replace the old ones in one rename, the reports follow, and
manifest.json is written last; so a run that is killed, or stops on an error, never leaves a manifest that
vouches for bytes it did not check.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from converter.errors import UserError

MARKER = ".convert-run.json"
_PREFIX = ".convert-"  # every temporary name convert uses in an output folder
REPORT_FILES = ("report.json", "report.md", "report.html", "manifest.json")


class OutputError(UserError):
    """The output folder cannot be used: not ours, not a folder, not writable, or the disk is full."""


_REASONS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.ENOTDIR: "a path component is a file, not a folder", errno.EEXIST: "it exists and is not a folder",
            errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "the name is too long"}


def reason(error: OSError) -> str:
    """What a failed write means, in words."""
    return _REASONS.get(error.errno, error.strerror or str(error))


def os_error(path: Path, error: OSError) -> OutputError:
    """A user-readable error for a failed write into the output folder (full disk, read-only, not a folder)."""
    return OutputError(f"--out {path}: cannot write there: {reason(error)}")


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    # -- ownership -------------------------------------------------------------------------------
    def claim(self) -> None:
        """Make sure the folder is ours (or new, or empty) before anything is computed; mark it."""
        path = self.path
        try:
            if path.exists() and not path.is_dir():
                raise OutputError(f"--out {path}: is a file, not a folder")
            marker = path / MARKER
            if path.is_dir() and not marker.is_file():
                foreign = sorted(p.name for p in path.iterdir())
                if foreign:
                    raise OutputError(f"--out {path}: the folder holds files convert did not write "
                                      f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): give a new "
                                      "or empty folder, so that none of yours is overwritten")
            written = self._written()
            artifacts = path / "artifacts"
            if artifacts.is_dir():
                strangers = sorted(p.name for p in artifacts.iterdir() if p.name not in written["artifacts"])
                if strangers:
                    raise OutputError(f"--out {path}: artifacts/{strangers[0]} was not written by convert: move it "
                                      "out of the run folder (convert replaces artifacts/ as a whole)")
            path.mkdir(parents=True, exist_ok=True)
            for leftover in path.glob(f"{_PREFIX}*"):
                if leftover.name != MARKER:
                    _remove(leftover)
            if not marker.is_file():
                self._mark(written)
        except OSError as error:
            raise os_error(path, error) from None

    def _written(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return {"artifacts": []}

    def _mark(self, written: dict[str, Any]) -> None:
        write_text(self.path / MARKER, json.dumps(written, indent=1) + "\n")

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, report: dict[str, Any], artifacts: dict[str, Path],
                renderers: dict[str, Callable[[dict[str, Any]], str]]) -> None:
        """Replace the folder's artifacts and reports with this run's, manifest.json last.

        `artifacts` maps an artifact name to the folder holding its files (a cache entry: copied, never linked,
        so editing an artifact cannot change the cache). `renderers` maps a file name to its text maker.
        """
        from converter.records import manifest

        path = self.path
        try:
            (path / "manifest.json").unlink(missing_ok=True)
            staging = path / f"{_PREFIX}staging-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            for name, source in artifacts.items():
                _copy_folder(source, staging / name)
            old = path / f"{_PREFIX}old-{uuid.uuid4().hex[:8]}"
            if (path / "artifacts").exists():
                os.replace(path / "artifacts", old)
            os.replace(staging, path / "artifacts")
            self._mark({"artifacts": sorted(artifacts)})
            _remove(old)
            write_json(path / "report.json", report)
            for filename, render in renderers.items():
                write_text(path / filename, render(report))
            write_results(path, report)
            write_json(path / "manifest.json", manifest(report))
        except OSError as error:
            for leftover in path.glob(f"{_PREFIX}staging-*"):
                _remove(leftover)
            raise os_error(path, error) from None


def write_results(path: Path, report: dict[str, Any], table: list[dict[str, Any]] | None = None) -> None:
    """results.csv (and results.parquet where pandas and pyarrow are installed): the tidy table of the run."""
    from converter import results

    table = results.rows(report, model=report.get("model")) if table is None else table
    write_text(path / "results.csv", results.to_csv(table))
    results.write_parquet(table, path / "results.parquet")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temporary file + rename); the temporary file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_PREFIX}tmp-{path.name}-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_folder(source: Path, target: Path) -> None:
    """Copy every file (not links: the copy must not share bytes with the cache); OSError as it happens."""
    target.mkdir(parents=True)
    for file in sorted(source.rglob("*")):
        destination = target / file.relative_to(source)
        if file.is_dir():
            destination.mkdir(exist_ok=True)
        else:
            shutil.copyfile(file, destination)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
