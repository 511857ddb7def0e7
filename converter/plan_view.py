"""`convert plan`: the steps of a run as a tree, each marked cached or to run."""
from __future__ import annotations

from converter.plan import Plan, Step
from converter.store import Store


def render_plan(plan: Plan, store: Store) -> str:
    """Pipeline models, then each export with its checks and latency rows; shared steps appear once."""
    cached = {step_id for step_id in plan.steps if store.has(step_id)}
    lines = [f"plan for {plan.recipe.name}: {len(plan.steps)} steps, {len(cached)} cached, "
             f"{len(plan.steps) - len(cached)} to run (cache {store.root})"]

    def mark(step: Step) -> str:
        return f"{'cached' if step.id in cached else 'run   '}  {step.label}  [{step.id}]"

    lines.append("models")
    for name, step in plan.models.items():
        lines.append(f"  {mark(step)}")
    data = [s for s in plan.steps.values() if s.kind in ("data", "split")]
    if data:
        lines.append("data")
        lines += [f"  {mark(step)}" for step in data]
    outputs = [s for s in plan.steps.values() if s.kind == "outputs"]
    if outputs:
        lines.append("reference outputs")
        lines += [f"  {mark(step)}" for step in outputs]
    lines.append("exports")
    for export in plan.exports:
        lines.append(f"  {mark(export.export)}")
        children = list(export.checks.values()) + export.latency
        for index, step in enumerate(children):
            lines.append(f"  {'└─' if index == len(children) - 1 else '├─'} {mark(step)}")
        for backend, why in export.skipped.items():
            lines.append(f"     skipped  {backend}: {why}")
    return "\n".join(lines) + "\n"
