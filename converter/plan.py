"""Turn a validated recipe into frozen steps, without importing TensorFlow.

A step is (kind, config, parents, inputs, versions); its id is a hash of exactly those contents, never of a
path, so two recipes that share a prefix (the same model, data and training) share its cache entries.
Kinds: source, data, stage, outputs, export, check, latency, explain (converter/steps/ has one function per kind);
a searched export (`search:`) has a `search` step in place of its `export` step, on two `split` steps of the eval
data (converter/steps/search.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from converter import backends as backend_table
from converter import formats
from converter.recipe.loader import LoadedRecipe
from converter.recipe.schema import SEARCHED_FORMATS, DatasetSpec, ExportBase, Recipe
from converter.versions import package_version

# Bumped when a step kind's code changes what it produces, so that old cache entries are not reused.
STEP_VERSIONS = {"source": 5, "data": 3, "stage": 3, "outputs": 3, "export": 8, "check": 5, "latency": 3, "explain": 1,
                 "split": 1, "search": 8, "score": 3}


@dataclass(frozen=True)
class Step:
    kind: str
    label: str  # what a person reads: 'export tflite-int8', 'check tflite-int8 on tflite'
    config: dict[str, Any]
    parents: dict[str, str] = field(default_factory=dict)  # role -> parent step id
    inputs: dict[str, Any] = field(default_factory=dict)  # fingerprints of input files (model, data)
    versions: dict[str, str] = field(default_factory=dict)  # tools that shape the result
    # where the input files are on this machine, and names: not part of the id (file contents are, in `inputs`)
    context: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        text = json.dumps([self.kind, STEP_VERSIONS[self.kind], self.config, self.parents, self.inputs, self.versions],
                          sort_keys=True, default=str)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "config": self.config, "parents": self.parents,
                "inputs": self.inputs, "versions": self.versions, "context": self.context}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Step":
        return cls(data["kind"], data["label"], data["config"], data["parents"], data["inputs"], data["versions"],
                   data.get("context", {}))


@dataclass(frozen=True)
class ExportPlan:
    """The steps of one export: the artifact, its check per backend and its latency rows."""

    spec: ExportBase
    export: Step  # the step whose entry holds artifact/: an `export` step, or a `search` step
    model: str  # the pipeline node it exports
    checks: dict[str, Step]  # backend -> check step
    latency: list[Step]
    skipped: dict[str, str]  # backend -> why it is not run on this machine
    explains: dict[str, Step] = field(default_factory=dict)  # backend -> explain step, added on demand (explain_step)
    reference_outputs: Optional[Step] = None  # a searched export's: the reference on the held-out part


@dataclass
class Plan:
    recipe: Recipe
    steps: dict[str, Step] = field(default_factory=dict)  # id -> step, parents before children
    models: dict[str, Step] = field(default_factory=dict)  # pipeline node ('source', stage names) -> step
    data: dict[str, Step] = field(default_factory=dict)  # role -> data step
    reference_outputs: Optional[Step] = None  # the reference model on the eval data
    exports: list[ExportPlan] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        self.steps.setdefault(step.id, step)
        return step

    def ancestors(self, step_id: str) -> Iterator[str]:
        for parent in self.steps[step_id].parents.values():
            yield from self.ancestors(parent)
            yield parent

    def lineage(self, node: str) -> list[dict[str, str]]:
        """The chain of pipeline nodes from `node` back to the source, nearest first."""
        chain = []
        while True:
            chain.append({"stage": node, "id": self.models[node].id})
            if node == "source":
                return chain
            node = self.recipe.stage_input(_stage_index(self.recipe, node))


@dataclass(frozen=True)
class PlanOptions:
    evaluate: bool = True  # evaluate on the eval data (parity runs regardless)
    benchmark: Optional[bool] = None  # None: as the recipe says
    benchmark_overrides: dict[str, Any] = field(default_factory=dict)


def build_plan(loaded: LoadedRecipe, options: PlanOptions = PlanOptions()) -> Plan:
    recipe = loaded.recipe
    plan = Plan(recipe)
    _model_steps(plan, recipe)
    for role in ("train", "calibration", "eval"):
        spec = recipe.data.for_calibration() if role == "calibration" else getattr(recipe.data, role)
        if spec is not None:
            plan.data[role] = plan.add(_data_step(role, spec, plan.models["source"]))
    verify = recipe.verify
    evaluate = options.evaluate and verify.enabled and "eval" in plan.data
    if evaluate:
        plan.reference_outputs = plan.add(_outputs_step(plan, recipe.main_line(), "eval", verify.limit, verify.batch_size))
    parity_data = _parity_data(plan, recipe)
    schedule = _schedule(recipe, options)
    for spec in recipe.exports:
        plan.exports.append(_export_plan(plan, recipe, spec, parity_data, evaluate, schedule))
    return plan


# ----------------------------------------------------------------------------- models and data
def _model_steps(plan: Plan, recipe: Recipe) -> None:
    spec = recipe.model
    inputs: dict[str, Any] = {}
    locations: dict[str, str] = {}
    if spec.path is not None:
        inputs["model"], locations["model"] = _content_hash(Path(spec.path), "model.path"), str(spec.path)
        inputs["model_type"] = "folder" if Path(spec.path).is_dir() else Path(spec.path).suffix.lower()
    elif spec.weights not in ("none", "imagenet"):
        inputs["weights"], locations["weights"] = _content_hash(Path(spec.weights), "model.weights"), str(spec.weights)
    if spec.custom_objects is not None:  # their code shapes the model: their content is part of the id
        inputs["custom_objects"] = _content_hash(Path(spec.custom_objects), "model.custom_objects")
        locations["custom_objects"] = str(spec.custom_objects)
    config = spec.model_dump(mode="json", exclude={"path", "weights", "custom_objects"})  # trust stays: it decides what may load
    config["weights"] = spec.weights if spec.weights in ("none", "imagenet") else "file"
    plan.models["source"] = plan.add(Step("source", "load the model", config, {}, inputs,
                                          _versions("tensorflow", "tf-keras"), locations))
    for index, stage in enumerate(recipe.pipeline):
        parent = plan.models[recipe.stage_input(index)]
        train = _data_step("train", recipe.data.train, plan.models["source"])
        plan.add(train)
        step = Step("stage", f"stage {stage.stage_name} ({stage.stage})", stage.model_dump(mode="json", exclude={"name", "input"}),
                    {"model": parent.id, "data": train.id}, {},
                    _versions("tensorflow", "tf-keras", "tensorflow-model-optimization"), {"name": stage.stage_name})
        plan.models[stage.stage_name] = plan.add(step)


def _data_step(role: str, spec: DatasetSpec, source: Step) -> Step:
    from converter.data.loading import fingerprint

    parents = {"model": source.id} if spec.source == "synthetic" else {}  # its inputs' shapes and dtypes
    locations = {key: str(getattr(spec, key)) for key in ("path", "labels_path") if getattr(spec, key) is not None}
    return Step("data", f"load data.{role}", {"spec": spec.model_dump(mode="json", exclude={"path", "labels_path"})},
                parents, {"files": fingerprint(spec)}, _versions("numpy", "pillow", "scikit-learn"), locations)


def _parity_data(plan: Plan, recipe: Recipe) -> Step:
    """The parity inputs: real samples when the recipe has any (eval, else calibration, else train data: an int8
    artifact judged on inputs outside its calibrated range would fail for no fault of its own), else seeded random
    inputs of the model's shape."""
    for role in ("eval", "calibration", "train"):
        if role in plan.data:
            return plan.data[role]
    spec = DatasetSpec(source="synthetic", count=recipe.verify.parity_samples, seed=0)
    return plan.add(_data_step("parity", spec, plan.models["source"]))


def _outputs_step(plan: Plan, node: str, role_or_step: str | Step, take: Optional[int], batch_size: int) -> Step:
    data = plan.data[role_or_step] if isinstance(role_or_step, str) else role_or_step
    on = f"the first {take} samples of {data.label.removeprefix('load ')}" if take else data.label.removeprefix("load ")
    return Step("outputs", f"outputs of {node} on {on}", {"take": take, "batch_size": batch_size},
                {"model": plan.models[node].id, "data": data.id}, {}, _versions("tensorflow"))


# ----------------------------------------------------------------------------- exports
def _export_plan(plan: Plan, recipe: Recipe, spec: ExportBase, parity_data: Step, evaluate: bool, schedule) -> ExportPlan:
    node = recipe.export_model(spec)
    parents = {"model": plan.models[node].id}
    if spec.needs_calibration():
        parents["calibration"] = plan.data["calibration"].id
    names_role = next((r for r in ("eval", "train", "calibration") if r in plan.data
                       and plan.data[r].config["spec"]["source"] in ("folder", "digits")), None)
    if spec.format.startswith("tfjs") and names_role:
        parents["class_names"] = plan.data[names_role].id
    verify = recipe.verify
    eval_data, reference_outputs = (plan.data["eval"], plan.reference_outputs) if evaluate else (None, None)
    searched = None
    if spec.search is not None and evaluate:
        export, eval_data, reference_outputs = _search_steps(plan, recipe, spec, node, parents)
        searched = reference_outputs
    else:  # a searched export without evaluation (--no-eval): its float export, like `quantize:` unset
        export = plan.add(Step("export", f"export {spec.name}", export_config(spec), parents, {},
                               _versions(*formats.FORMATS[spec.format].tools), {"name": spec.name}))
    parity_take = verify.parity_samples
    source_parity = plan.add(_outputs_step(plan, node, parity_data, parity_take, parity_take))
    checks: dict[str, Step] = {}
    latency: list[Step] = []
    skipped: dict[str, str] = {}
    chosen = _backends(spec)
    for backend in chosen:
        why = backend_table.unavailable(backend)
        if why is not None:
            skipped[backend] = why
            continue
        check_parents = {"artifact": export.id, "parity_data": parity_data.id, "source_outputs": source_parity.id}
        if evaluate:
            check_parents.update(eval_data=eval_data.id, reference_outputs=reference_outputs.id)
        cap = verify.backend_limits.get(backend, backend_table.BACKENDS[backend].eval_samples)
        limit = verify.limit if searched is None else None  # a searched export: all of its held-out part
        take = limit if cap is None or (limit is not None and limit <= cap) else cap
        checks[backend] = plan.add(Step(
            "check", f"check {spec.name} on {backend}",
            {"backend": backend, "format": spec.format, "parity_samples": parity_take,
             "eval_take": take if evaluate else None, "batch_size": verify.batch_size,
             "sample_cap": cap if evaluate and take == cap and cap is not None else None,
             "primary_output": verify.primary_output},
            check_parents, {}, {**_versions(), **backend_table.versions(backend)}))
    if schedule is not None:
        from converter.benchmark.measure import plan as latency_plan

        for backend, threads, batch in latency_plan([b for b in chosen if b in checks], schedule):
            latency.append(plan.add(Step(
                "latency", f"time {spec.name} on {backend}, {threads} thread(s), batch {batch}",
                {"backend": backend, "format": spec.format, "threads": threads, "batch": batch,
                 "timing": schedule.timing.as_dict(), "machine": _machine_key()},
                {"artifact": export.id, "input": parity_data.id}, {}, {**_versions(), **backend_table.versions(backend)})))
    return ExportPlan(spec, export, node, checks, latency, skipped, reference_outputs=searched)


def export_config(spec: ExportBase) -> dict[str, Any]:
    """An export step's config: what shapes the artifact (a fixed export and a search candidate with the same
    settings share their id, so each reuses what the other made)."""
    return spec.model_dump(mode="json", exclude={"name", "verify", "backends", "model", "search"})


def _search_steps(plan: Plan, recipe: Recipe, spec: ExportBase, node: str,
                  export_parents: dict[str, str]) -> tuple[Step, Step, Step]:
    """(search step, held-out data, reference on the held-out data) of a searched export.

    data.eval (its first verify.limit samples) is split once, by seed, into the part the search scores candidates
    on and the held-out part that only the chosen artifact's checks see."""
    search = spec.search
    verify = recipe.verify
    parts = {}
    for part in ("search", "holdout"):
        parts[part] = plan.add(Step("split", f"split data.eval: {part} part ({spec.name})",
                                    {"part": part, "holdout": search.holdout, "seed": search.seed, "take": verify.limit},
                                    {"data": plan.data["eval"].id}, {}, _versions("numpy")))
    outputs = {part: plan.add(_outputs_step(plan, node, parts[part], None, verify.batch_size)) for part in parts}
    backend = search.backend or SEARCHED_FORMATS[spec.format]
    config = {"export": export_config(spec), "search": search.model_dump(mode="json"), "backend": backend,
              "batch_size": verify.batch_size,
              "budget": recipe.verify.budget().merged(spec.searched_budget()).model_dump(exclude_none=True)}
    parents = {**export_parents, "data": parts["search"].id, "outputs": outputs["search"].id}
    step = plan.add(Step("search", f"search {spec.name}", config, parents, {},
                         {**_versions(*formats.FORMATS[spec.format].tools), **backend_table.versions(backend)},
                         {"name": spec.name}))
    return step, parts["holdout"], outputs["holdout"]


EXPLAIN_SAMPLES = 32


def explain_step(plan: Plan, export: ExportPlan, backend: str, samples: int = EXPLAIN_SAMPLES,
                 against: Optional[str] = None) -> Step:
    """The step explaining `export` on `backend` against the float model it came from (converter/explain/), on the
    first `samples` evaluation samples (the parity inputs without eval data); `against`: a second backend to find
    where the two part. Added to the plan and to export.explains."""
    data = plan.data.get("eval") or plan.steps[export.checks[backend].parents["parity_data"]]
    parents = {"artifact": export.export.id, "model": plan.models[export.model].id, "data": data.id}
    if "calibration" in export.export.parents:  # TFLite int8: the debug model is calibrated as the artifact was
        parents["calibration"] = export.export.parents["calibration"]
    target = plan.recipe.verify.budget().merged(export.spec.verify).min_snr_db  # the output SQNR to reach
    versions = {**_versions("tensorflow", "tf-keras"), **backend_table.versions(backend)}
    if against:
        versions.update(backend_table.versions(against))
    label = f"explain {export.spec.name} on {backend}" + (f" against {against}" if against else "")
    config = {"backend": backend, "format": export.spec.format, "samples": samples, "against": against,
              "export": export.export.config, "min_snr_db": target}
    step = plan.add(Step("explain", label, config, parents, {}, versions, {"name": export.spec.name}))
    export.explains[backend] = step
    return step


def _backends(spec: ExportBase) -> list[str]:
    able = backend_table.for_format(spec.format)
    return [b for b in (spec.backends or backend_table.for_format(spec.format, defaults_only=True)) if b in able]


def _schedule(recipe: Recipe, options: PlanOptions):
    from converter.benchmark.schedule import Schedule

    schedule = Schedule.from_recipe(recipe.benchmark, options.benchmark_overrides)
    wanted = options.benchmark if options.benchmark is not None else schedule.enabled
    return schedule if wanted else None


# ----------------------------------------------------------------------------- helpers
def _stage_index(recipe: Recipe, name: str) -> int:
    return next(i for i, stage in enumerate(recipe.pipeline) if stage.stage_name == name)


def _versions(*packages: str) -> dict[str, str]:
    return {"convert": package_version("convert"), **{p: package_version(p) for p in packages}}


_MACHINE: dict[str, Any] = {}


def _machine_key() -> dict[str, Any]:
    """What makes a latency row belong to this machine: CPU model and core count."""
    if not _MACHINE:
        from converter.benchmark.machine import cpu_key

        _MACHINE.update(cpu_key())
    return dict(_MACHINE)


_HASHES: dict[tuple[str, float, int], str] = {}


def _content_hash(path: Path, key_name: str) -> str:
    """Hash of a model file's or folder's contents, memoized per process by path, mtime and size; ModelError
    naming the recipe key and the entry that cannot be read."""
    from converter.sources import model_fingerprint

    try:
        stat = path.stat()
    except OSError:
        return model_fingerprint(path, key_name)  # raises the ModelError
    key = (str(path), stat.st_mtime, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = model_fingerprint(path, key_name)
    return _HASHES[key]
