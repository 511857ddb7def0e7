"""Build a run's typed result from its plan and the outcome of every step, judging each measurement.

Verdicts are made here, fresh on every run, from cached measurements: the parity tolerance of the format, the
recipe's budget, and the state of each backend (ran, failed to run, or not available on this machine).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from converter.budget import failures as budget_failures
from converter.evaluate import parity_verdict
from converter.executor import Outcome
from converter import stats
from converter.metrics import label_metrics
from converter.plan import ExportPlan, Plan
from converter.recipe.loader import LoadedRecipe
from converter.records import Artifact, Evaluation, Failure, Reference, RunResult, StageRecord


def assemble(loaded: LoadedRecipe, plan: Plan, outcomes: dict[str, Outcome], seconds: float,
             machine: dict[str, Any], run_info: dict[str, Any]) -> RunResult:
    from converter.benchmark.findings import findings
    from converter.versions import tool_versions

    recipe = loaded.recipe
    reference = _reference(plan, outcomes)
    artifacts = [_artifact(loaded, plan, export, outcomes, reference) for export in plan.exports]
    reference_size = next((a.size_bytes for a in artifacts if a.format == "savedmodel" and a.size_bytes), None)
    for artifact in artifacts:
        if reference_size and artifact.size_bytes:
            artifact.size_ratio = artifact.size_bytes / reference_size
    result = RunResult(
        name=recipe.name, model=recipe.model.application or Path(recipe.model.path).name, recipe_hash=loaded.hash(), recipe=str(loaded.path) if loaded.path else None,
        reference=reference, stages=_stages(plan, outcomes), artifacts=artifacts, warnings=list(loaded.warnings),
        run={"seconds": round(seconds, 2), **run_info}, versions=tool_versions(), machine=machine)
    result.findings = findings(result.to_json())
    return result


def _reference(plan: Plan, outcomes: dict[str, Outcome], step=None) -> Reference:
    """The reference on the eval data, or on the samples of `step` (an outputs step: a searched export's held-out
    part, so that its drop compares the same samples)."""
    from converter.steps.data import load
    from converter.steps.outputs import outputs

    node = plan.recipe.main_line()
    source = outcomes.get(plan.models[node].id)
    reference = Reference(node, source.record.get("kind", "keras") if source else "keras", plan.models[node].id)
    step = step or plan.reference_outputs
    if step is None or step.id not in outcomes or not outcomes[step.id].ok:
        return reference
    from converter.steps.outputs import primary

    every = outputs(outcomes[step.id].entry)
    reference.primary_output = primary(list(every), plan.recipe.verify.primary_output)
    output = every[reference.primary_output]
    data = load(outcomes[step.parents["data"]].entry, step.config["take"])
    reference.samples = int(len(output))
    reference.metrics = label_metrics(output, data.y)
    reference.eval_data_id = step.parents["data"] + (f"-first{step.config['take']}" if step.config["take"] else "")
    if "top1" in reference.metrics:
        correct = np.argmax(output, axis=1) == data.y
        reference.per_sample = stats.encode_per_sample(correct)
        reference.metrics["top1_ci"] = list(stats.wilson(int(correct.sum()), len(correct)))
    return reference


def _stages(plan: Plan, outcomes: dict[str, Outcome]) -> list[StageRecord]:
    rows = []
    for index, stage in enumerate(plan.recipe.pipeline):
        step = plan.models[stage.stage_name]
        record = outcomes[step.id].record if step.id in outcomes else {}
        rows.append(StageRecord(stage.stage_name, stage.stage, step.id, plan.recipe.stage_input(index),
                                record.get("seconds"), record.get("notes", []), record.get("details", {})))
    return rows


def _artifact(loaded: LoadedRecipe, plan: Plan, export: ExportPlan, outcomes: dict[str, Outcome],
              reference: Reference) -> Artifact:
    spec = export.spec
    artifact = Artifact(spec.name, spec.format, spec.quantization_name(), f"artifacts/{spec.name}", export.model,
                        export.export.id, plan.lineage(export.model))
    made = outcomes[export.export.id]
    if not made.ok:
        artifact.error = made.error
        artifact.problems.append(Failure(spec.name, None, "export", made.error or "export failed"))
        return artifact
    record = made.record
    for key in ("files", "size_bytes", "gzip_bytes", "sha256", "seconds", "notes", "details"):
        setattr(artifact, key, record.get(key, getattr(artifact, key)))
    if export.reference_outputs is not None:  # searched: judged on the held-out part, against the reference there
        reference = _reference(plan, outcomes, export.reference_outputs)
        artifact.details.setdefault("search", {})["holdout_reference"] = reference.to_json()
    budget = loaded.recipe.verify.budget().merged(spec.searched_budget())
    skipped = dict(export.skipped)
    for backend, step in export.checks.items():
        outcome = outcomes[step.id]
        if not outcome.ok and outcome.record.get("skipped"):  # found unavailable only when loading (no WebGPU)
            skipped[backend] = outcome.record["skipped"]
            continue
        artifact.evaluations.append(_evaluation(artifact, outcome, budget, reference, loaded.recipe.verify.within_noise))
        _attach_explain(artifact.evaluations[-1], export.explains.get(backend), outcomes)
    for backend, why in skipped.items():
        requested = spec.backends is not None and backend in spec.backends
        evaluation = Evaluation(backend, "error" if requested else "skipped", skipped=why)
        if requested:
            evaluation.error = f"{spec.name} on {backend}: the recipe asks for this backend, but {why}"
            evaluation.reasons = [evaluation.error]
            artifact.problems.append(Failure(spec.name, backend, "load", evaluation.error))
        artifact.evaluations.append(evaluation)
    for step in export.latency:
        outcome = outcomes.get(step.id)
        if outcome is None:
            continue
        head = {k: step.config[k] for k in ("backend", "threads", "batch")}
        artifact.latency.append({**head, **outcome.record} if outcome.ok else {**head, **outcome.record, "error": outcome.error})
    return artifact


def _attach_explain(evaluation: Evaluation, step, outcomes: dict[str, Outcome]) -> None:
    """The explain step's record (converter/explain/), or why it failed, on the evaluation it explains."""
    if step is None or step.id not in outcomes:
        return
    outcome = outcomes[step.id]
    evaluation.explain = dict(outcome.record) if outcome.ok else {"error": outcome.error}


def _evaluation(artifact: Artifact, outcome: Outcome, budget, reference: Reference,
                within_noise: str = "point") -> Evaluation:
    record, backend = outcome.record, outcome.step.config["backend"]
    evaluation = Evaluation(backend, "passed", runtime=record.get("runtime"),
                            budget={k: v for k, v in budget.model_dump().items() if v is not None})
    if not outcome.ok:
        evaluation.status, evaluation.error = "error", outcome.error
        evaluation.reasons = [outcome.error]
        kind = "run" if "fails to run" in (outcome.error or "") else "load"
        artifact.problems.append(Failure(artifact.name, backend, kind, outcome.error or "check failed"))
        return evaluation
    problems: list[Failure] = []
    if "parity" in record:
        parity, found = _parity(record["parity"], artifact)
        artifact.parity.append(parity)
        problems += found
    metrics = dict(record.get("metrics") or {})
    per_output = metrics.pop("outputs", None)
    reference_top1 = record.get("reference_top1", reference.metrics.get("top1"))  # on the samples this backend saw
    if "top1" in metrics and reference_top1 is not None:
        metrics["top1_drop"] = reference_top1 - metrics["top1"]
    evaluation.samples, evaluation.sample_cap = record.get("samples"), record.get("sample_cap")
    evaluation.primary_output = record.get("primary_output")
    evaluation.per_sample = record.get("per_sample") or {}
    if evaluation.per_sample and reference.per_sample:
        agree = evaluation.per_sample.get("agree")
        seen = stats.decode_per_sample(evaluation.per_sample)
        metrics.update(stats.evaluation_stats(
            stats.decode_per_sample(reference.per_sample)[:len(seen)], seen,
            stats.decode_per_sample({"correct": agree, "n": evaluation.per_sample["n"]}) if agree else None))
    if evaluation.sample_cap:  # a slow backend checked on a few samples fails on evidence only: its interval
        within_noise = "pass"  # must lie beyond the budget (one flip in 16 is 6 points); the uncapped ones judge
    problems += budget_failures(metrics, budget, artifact.name, backend, within_noise)
    if per_output:  # every output meets the budget; the primary's figures head the metrics
        for name, values in per_output.items():
            if name != evaluation.primary_output:
                problems += budget_failures(values, budget, f"{artifact.name} output '{name}'", backend, within_noise)
        headline = dict(metrics)
        metrics["outputs"] = {name: headline if name == evaluation.primary_output else values
                              for name, values in per_output.items()}
    evaluation.metrics = metrics
    evaluation.reasons = [str(p) for p in problems]
    evaluation.status = "failed" if problems else "passed"
    artifact.problems += problems
    return evaluation


def _parity(measured: dict[str, Any], artifact: Artifact):
    """The parity verdict on every output: each against the format's tolerance, reasons naming the output."""
    per_output = measured.get("outputs") or {}
    if not per_output:
        return parity_verdict(measured, artifact.format, artifact.quantization, artifact.name)
    found: list[Failure] = []
    outputs: dict[str, Any] = {}
    for name, values in per_output.items():
        one, problems = parity_verdict({**measured, **values}, artifact.format, artifact.quantization,
                                       f"{artifact.name} output '{name}'")
        outputs[name] = {"max_abs_diff": one.max_abs_diff, "cosine": one.cosine, "passed": one.passed}
        found += problems
    parity, _ = parity_verdict(measured, artifact.format, artifact.quantization, artifact.name)
    parity.passed, parity.reasons, parity.outputs = not found, [str(f) for f in found], outputs
    return parity, found


class Judge:
    """The verdict on an artifact as soon as its last check finishes, as console lines (the report judges
    everything again): one PASS line for an artifact that passed on every backend, one FAIL line per backend it
    failed on."""

    def __init__(self, loaded: LoadedRecipe, plan: Plan, outcomes: dict[str, Outcome]):
        self.loaded, self.plan, self.outcomes = loaded, plan, outcomes
        self._reference: Optional[Reference] = None
        self._exports = {step.id: export for export in plan.exports for step in export.checks.values()}
        self._done: dict[str, list[Evaluation]] = {}

    def evaluation(self, outcome: Outcome) -> Optional[Evaluation]:
        """The judged evaluation of a check step's outcome (None for other steps)."""
        export = self._exports.get(outcome.step.id)
        if export is None:
            return None
        if (outcome.error or "").startswith("not run:") or outcome.record.get("skipped"):
            return None
        if self._reference is None:
            self._reference = _reference(self.plan, self.outcomes)
        reference = self._reference if export.reference_outputs is None else \
            _reference(self.plan, self.outcomes, export.reference_outputs)  # searched: the held-out part's
        spec = export.spec
        artifact = Artifact(spec.name, spec.format, spec.quantization_name(), "", export.model, export.export.id, [])
        budget = self.loaded.recipe.verify.budget().merged(spec.searched_budget())
        return _evaluation(artifact, outcome, budget, reference, self.loaded.recipe.verify.within_noise)

    def __call__(self, outcome: Outcome) -> Optional[str]:
        export = self._exports.get(outcome.step.id)
        if export is None:
            return None
        spec = export.spec
        evaluations = self._done.setdefault(spec.name, [])
        evaluation = self.evaluation(outcome)
        if evaluation is not None:
            evaluations.append(evaluation)
        if any(step.id not in self.outcomes for step in export.checks.values()) or not evaluations:
            return None
        failed = [e for e in evaluations if not e.passed]
        if failed:
            return "\n".join(f"[red]FAIL[/red] {_escape(e.reasons[0] if e.reasons else spec.name + ' on ' + e.backend)}"
                             for e in failed)
        top1 = sorted(e.metrics["top1"] for e in evaluations if e.metrics.get("top1") is not None)
        drops = [e.metrics["top1_drop"] for e in evaluations if e.metrics.get("top1_drop") is not None]
        figures = ""
        if top1:
            figures = f": top-1 {100 * top1[0]:.2f} %" if top1[0] == top1[-1] else \
                f": top-1 {100 * top1[0]:.2f} to {100 * top1[-1]:.2f} %"
        if drops:
            figures += f" (drop at most {100 * max(drops):.2f} pts)"
        return f"[green]PASS[/green] {_escape(spec.name)}{figures} on {', '.join(e.backend for e in evaluations)}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
