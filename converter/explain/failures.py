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
            evaluation = judge.evaluation(outcome) if outcome is not None and outcome.ok else None
            if evaluation is not None and reads_tensors(backend):
                verdicts[backend] = evaluation.passed
        for backend, passed in verdicts.items():
            if not passed:
                wanted.append(explain_step(plan, export, backend, samples, _passing(export, verdicts)).id)
    for step_id in wanted:  # one at a time: a bug in one explanation costs only that one, never the run's report
        try:
            executor.run(plan, [step_id])
        except Exception as error:  # noqa: BLE001 - reported on the evaluation, with its traceback in the log
            import traceback

            from converter.errors import UserError
            from converter.executor import Outcome

            if isinstance(error, UserError):  # the cache's disk: the user's to fix, as for any step
                raise
            executor.events.log("".join(traceback.format_exception(error)))
            executor.outcomes[step_id] = Outcome(plan.steps[step_id], error=f"internal error in explain (a bug): "
                                                 f"{type(error).__name__}: {error}")
    return wanted


def reads_tensors(backend: str) -> bool:
    """Whether the backend's runtime adapter can read intermediate tensors (Runtime.intermediates)."""
    from converter.backends import BACKENDS
    from converter.formats import load_symbol
    from converter.runtimes.base import Runtime

    return load_symbol(BACKENDS[backend].runtime).intermediates is not Runtime.intermediates


def _passing(export: ExportPlan, verdicts: dict[str, bool]) -> Optional[str]:
    """A backend on which the same artifact passed, if any (the first, in the backends table's order)."""
    return next((backend for backend, passed in verdicts.items() if passed), None)
