"""Typed results of a run, mirroring docs/report-format.md: `RunResult.to_json()` is report.json.

The assembler (converter/assemble.py) builds them from a run's outcomes; the renderers read the JSON only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class Failure:
    """One reason an artifact failed: where, which metric, the limit and the measured value."""

    artifact: str
    backend: Optional[str]
    kind: str  # 'export', 'load', 'run', 'parity', 'budget'
    message: str
    metric: Optional[str] = None
    limit: Optional[float] = None
    measured: Optional[float] = None

    def __str__(self) -> str:
        return self.message


@dataclass
class Parity:
    backend: str
    samples: int
    max_abs_diff: float
    cosine: float
    tolerance: dict[str, Any]
    passed: bool
    reasons: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)  # several outputs: {name: {max_abs_diff, cosine, passed}}


@dataclass
class Evaluation:
    """One artifact on one backend: its measurements and the verdict on them."""

    backend: str
    status: str  # 'passed', 'failed', 'error' (could not load or run), 'skipped' (backend not on this machine)
    runtime: Optional[dict[str, Any]] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    error: Optional[str] = None
    skipped: Optional[str] = None  # why, with the command that installs what is missing
    per_sample: dict[str, Any] = field(default_factory=dict)
    samples: Optional[int] = None  # evaluation samples this backend ran (the first N of the eval data)
    sample_cap: Optional[int] = None  # set when the backend's cap (backends.py, verify.backend_limits) limited them
    primary_output: Optional[str] = None  # the output the top-level metrics describe (several outputs)
    explain: Optional[dict[str, Any]] = None  # where the error starts (converter/explain/), or {'error': why}

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "skipped")

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None and v != {} or k in ("metrics", "budget")}
        data["passed"] = self.passed
        return data


@dataclass
class Artifact:
    name: str
    format: str
    quantization: str
    path: str
    model: str
    id: str
    parents: list[dict[str, str]]
    files: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: Optional[int] = None
    gzip_bytes: Optional[int] = None
    sha256: Optional[str] = None
    size_ratio: Optional[float] = None
    seconds: Optional[float] = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    parity: list[Parity] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)  # rows as docs/benchmarks.md describes them
    error: Optional[str] = None  # the export itself failed
    problems: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "format": self.format, "quantization": self.quantization, "path": self.path,
            "model": self.model, "id": self.id, "parents": self.parents}
        if self.error is None:
            data.update(files=self.files, size_bytes=self.size_bytes, gzip_bytes=self.gzip_bytes, sha256=self.sha256)
            if self.size_ratio is not None:
                data["size_ratio"] = self.size_ratio
        else:
            data["error"] = self.error
        data.update(seconds=self.seconds, notes=self.notes, details=self.details,
                    parity=[asdict(p) for p in self.parity], evaluations=[e.to_json() for e in self.evaluations],
                    latency=self.latency, failures=[str(p) for p in self.problems],
                    failed_checks=[asdict(p) for p in self.problems], passed=self.passed)
        return data


@dataclass
class Reference:
    model: str
    format: str
    id: str
    samples: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, Any] = field(default_factory=dict)
    eval_data_id: Optional[str] = None  # which samples, in which order: two runs with the same id can be paired
    primary_output: Optional[str] = None  # the output `metrics` describe

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class StageRecord:
    name: str
    stage: str
    id: str
    input: str
    seconds: Optional[float] = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    name: str
    model: str  # the source model: its Keras application name or file name
    recipe_hash: str
    recipe: Optional[str]
    reference: Reference
    stages: list[StageRecord]
    artifacts: list[Artifact]
    warnings: list[str]
    run: dict[str, Any]  # seconds, cache_hits, computed, cache_dir
    versions: dict[str, str]
    machine: dict[str, Any]
    findings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def artifact(self, name: str) -> Artifact:
        return next(a for a in self.artifacts if a.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "recipe_hash": self.recipe_hash, "recipe": self.recipe, "passed": self.passed,
                "reference": self.reference.to_json(), "stages": [asdict(s) for s in self.stages],
                "artifacts": [a.to_json() for a in self.artifacts], "warnings": self.warnings, "run": self.run,
                "versions": self.versions, "machine": self.machine, "findings": self.findings}


MANIFEST_KEYS = ("name", "format", "quantization", "path", "files", "size_bytes", "gzip_bytes", "sha256", "parents",
                 "id", "passed")


def manifest(report: dict[str, Any]) -> dict[str, Any]:
    """manifest.json: what a release pipeline needs about each artifact, from report.json."""
    return {"name": report["name"], "recipe_hash": report["recipe_hash"], "versions": report["versions"],
            "artifacts": [{k: a[k] for k in MANIFEST_KEYS if k in a} for a in report["artifacts"]]}
