"""The run's hook: after the main run, an explain step for every (artifact, backend) that failed its budget or
parity, run with the same executor so that its result is cached like any step and lands in the report."""
from __future__ import annotations

from typing import Optional

from converter.plan import EXPLAIN_SAMPLES, ExportPlan, Plan, explain_step


def explain_failures(loaded, plan: Plan, outcomes, executor, samples: int = EXPLAIN_SAMPLES) -> list[str]:
    """Add and run the explain steps; returns their ids. A check that could not load or run the artifact is not
    explained (there is nothing to read); a backend on which the same artifact passed is the one to compare with."""
    from converter.assemble import Judge

    judge = Judge(loaded, plan, outcomes)
    wanted = []
    for export in plan.exports:
        verdicts = {}
        for backend, check in export.checks.items():
            outcome = outcomes.get(check.id)
            if outcome is not None and outcome.ok:
                verdicts[backend] = judge.evaluation(outcome).passed
        for backend, passed in verdicts.items():
            if not passed:
                wanted.append(explain_step(plan, export, backend, samples, _passing(export, verdicts)).id)
    if wanted:
        executor.run(plan, wanted)
    return wanted


def _passing(export: ExportPlan, verdicts: dict[str, bool]) -> Optional[str]:
    """A backend on which the same artifact passed, if any (the first, in the backends table's order)."""
    return next((backend for backend, passed in verdicts.items() if passed), None)
