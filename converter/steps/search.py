"""Step `search`: the smallest artifact of an export that holds its budget on the search part of data.eval.

Plans are static and candidates are not: the search step is one step of the plan (its entry holds the chosen
artifact, so the export's checks, latency rows and publication treat it like any export), and inside it every
candidate is two steps of their own, materialized through the same cache protocol as the plan's steps:

- `export` with the candidate's keys (TF.js: a `quantize:` map; TFLite: `keep_float_nodes`): the same config,
  parents and id as a fixed export with those keys, so a candidate and a pasted fixed export reuse each other;
- `score` (below): the candidate on the search part in the search backend.

The format's search space (converter/search/*_space.py, opened by SPACES below) says what the items and levels are
and ranks the items; the strategy (converter/search/strategy.py) and everything here are format-free. A re-run,
or a search with another budget or more trials, rebuilds and rescores nothing it has seen. The step never reads
the held-out part: its parents are the search part and the reference outputs on it.
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
from pathlib import Path
from typing import Any, Callable

from pydantic import TypeAdapter

from converter.steps import StepContext, StepFailed
from converter.store import Entry


def run(ctx: StepContext) -> dict[str, Any]:
    from converter import backends
    from converter.artifact_files import describe_files
    from converter.recipe.schema import Budget, Search
    from converter.search.strategy import RevertSearch

    started = time.perf_counter()
    name = ctx.step.context.get("name", "search")
    why = backends.unavailable(ctx.config["backend"])
    if why is not None:
        raise StepFailed(f"{name}: the search scores candidates on {ctx.config['backend']}, which cannot run here: {why}")
    search = Search.model_validate(ctx.config["search"])
    if search.objective == "latency":
        why = backends.unavailable(search.latency_backend or ctx.config["backend"])
        if why is not None:
            raise StepFailed(f"{name}: the search times candidates on {search.latency_backend}, which cannot run here: {why}")
    budget = Budget(**ctx.config["budget"])
    runner = _Candidates(ctx, name, budget)
    opened = SPACES[ctx.config["export"]["format"]](runner, search)
    space, float_outcome = opened.space, opened.float_outcome
    runner.space = space
    float_bytes = float_outcome.record["size_bytes"]
    runner.float_weight_bytes = float_outcome.record.get("details", {}).get("weight_bytes") or float_bytes
    fixed = f" ({len(space.fixed)} more fixed at {space.levels[1]}: corrected biases)" if space.fixed else ""
    ctx.log(f"search {name}: {len(space.ranked)} {space.kind}s ranked by {space.ranking}{fixed}; "
            f"at most {search.max_trials} candidates on {ctx.parents['data'].record.get('samples')} samples")

    def evaluate(assignment: dict[str, str], phase: str, variant: str | None):
        return runner.trial(assignment, phase, search.objective, float_bytes, variant)

    outcome = RevertSearch(space.ranked, space.levels, evaluate, search.max_trials,
                           saving=lambda item: space.elements.get(item, 0), whole_levels=space.whole_levels,
                           variants=tuple(space.variants), max_seconds=search.max_seconds).run()
    chosen = outcome.best
    notes = []
    if chosen is None:
        built = [t for t in outcome.trials if "_entry" in t.record]
        if not built:
            reasons = "; ".join(r for t in outcome.trials for r in t.record.get("reasons", []))
            raise StepFailed(f"{name}: search: no candidate could be built and scored ({outcome.stop_reason}): {reasons}")
        chosen = min(built, key=lambda t: (t.record.get("top1_drop") is None, t.record.get("top1_drop") or 0))
        notes.append(f"no candidate held the budget on the search part ({outcome.stop_reason}): trial {chosen.index}, "
                     "the one with the smallest drop, is kept and checked on the held-out part")
    shutil.copytree(Path(chosen.record["_entry"]) / "artifact", ctx.out / "artifact")
    keys = {**space.export_keys(chosen.assignment), **space.variants.get(chosen.variant, {})}
    ctx.log(f"search {name}: {outcome.stop_reason}; chosen trial {chosen.index} "
            f"({chosen.record['size_bytes']} bytes, {space.summary(chosen.assignment)})")
    trials = [{k: v for k, v in t.record.items() if not k.startswith("_")} for t in outcome.trials]
    details = {
        **chosen.record.get("_details", {}),
        "search": {
            "objective": search.objective, "budget": budget.model_dump(exclude_none=True), "backend": ctx.config["backend"],
            "max_trials": search.max_trials, "ranking": space.ranking, "item_kind": space.kind,
            "levels": list(space.levels), "holdout": search.holdout, "seed": search.seed,
            "search_samples": ctx.parents["data"].record.get("samples"),
            "float_size_bytes": float_bytes, "float_weight_bytes": runner.float_weight_bytes,
            "float_export_id": float_outcome.step.id,
            "trials": trials, "stop_reason": outcome.stop_reason, "chosen_trial": chosen.index,
            "chosen_passed": chosen.passed,
            "search_metrics": chosen.record.get("metrics", {}),
            "recipe": keys,  # the chosen map in recipe terms: pasteable as a fixed export's keys
            **opened.details(chosen.assignment),
        },
    }
    return {"seconds": round(time.perf_counter() - started, 2), "notes": notes + chosen.record.get("_notes", []),
            "details": details, **describe_files(ctx.out / "artifact")}


class _Opened:
    """A format's space, opened on real artifacts: the space, the float export its sizes are measured against, and
    the format's own entries of the search details (TF.js keeps `quantize`, `weights`, `dtypes`)."""

    def __init__(self, space, float_outcome, details):
        self.space, self.float_outcome, self.details = space, float_outcome, details


def _tfjs(runner: "_Candidates", search) -> _Opened:
    from converter.exports.tfjs_bias import targets
    from converter.exports.tfjs_per_channel import kernels
    from converter.search import tfjs_space

    float_outcome = runner.export({"quantize": None}, required=True)
    artifact = float_outcome.entry.path / "artifact"
    weights = tfjs_space.read_weights(artifact)
    content = json.loads((artifact / "model.json").read_text())
    stored = kernels(content) if search.space.per_channel else {}
    biases = ({t["bias"] for t in targets(content, {w.name for w in weights}).values()}
              if search.space.bias_correction else None)
    space = tfjs_space.space(weights, list(search.space.dtypes), search.space.ranking, stored, search.space.range, biases)

    def details(assignment: dict[str, str]) -> dict[str, Any]:
        assignment = {**space.fixed, **assignment}
        weights_map = [{"name": w.name, "dtype": assignment[w.name], "elements": w.elements, "shape": list(w.shape),
                        "per_channel": w.name in stored, "searched": w.name not in space.fixed,
                        "sensitivity": float(f"{space.scores.get(w.name, 0.0):.4g}")} for w in weights]
        return {"dtypes": list(space.levels), "quantize": space.export_keys(assignment)["quantize"],
                "weights": weights_map}

    return _Opened(space, float_outcome, details)


def _node_space(runner: "_Candidates", float_keys: dict[str, Any], floor_keys: dict[str, Any], qat_reason: str):
    """What the TFLite and ONNX spaces start from: (float outcome, all-int8 floor outcome, the samples to rank on).
    The float export is the reference sizes are measured against; the floor (the search's floor candidate, built
    here once and reused from the cache by the search) is what the nodes are read from and ranked on."""
    from converter.exports.tflite import is_qat_model
    from converter.steps.data import load
    from converter.steps.stage import model_ref

    if is_qat_model(model_ref(runner.ctx.parents["model"])):
        raise StepFailed(f"{runner.name}: search: the model is quantization-aware trained, and {qat_reason}: "
                         "nothing to search")
    float_outcome = runner.export(float_keys, required=True)
    floor = runner.export(floor_keys)
    if not floor.ok:
        raise StepFailed(f"{runner.name}: search: the all-int8 export fails: {floor.error}")
    x = load(runner.ctx.parents["data"]).x
    return float_outcome, floor, x if isinstance(x, dict) else x[:RANK_SAMPLES]


def _node_details(space, key: str) -> Callable[[dict[str, str]], dict[str, Any]]:
    """A node space's own search details: the chosen list under `key` and the per-node map."""
    def details(assignment: dict[str, str]) -> dict[str, Any]:
        nodes = space.describe(assignment, lambda node: {"median_channel_sqnr_db": -space.scores[node]})
        return {key: space.export_keys(assignment)[key], "nodes": nodes}

    return details


def _tflite(runner: "_Candidates", search) -> _Opened:
    """Int8 with nodes kept float (keep_float_nodes)."""
    from converter.search import tflite_space
    from converter.steps.export import calibration_samples
    from converter.steps.stage import model_ref

    float_outcome, floor, x = _node_space(
        runner, {"quantization": "none", "input_type": "float32", "output_type": "float32"}, {"keep_float_nodes": []},
        "TFLite ignores keep_float_nodes on it")
    try:
        space = tflite_space.space(model_ref(runner.ctx.parents["model"]), runner.spec({"keep_float_nodes": []}),
                                   calibration_samples(runner.ctx.parents["calibration"]), x,
                                   floor.entry.path / "artifact" / "model.tflite")
    except ValueError as error:
        raise StepFailed(f"{runner.name}: search: {error}") from None
    return _Opened(space, float_outcome, _node_details(space, "keep_float_nodes"))


def _onnx(runner: "_Candidates", search) -> _Opened:
    """Static QDQ int8 with nodes kept float (exclude_nodes)."""
    from converter.search import onnx_space

    float_outcome, floor, x = _node_space(runner, {"quantization": "none"}, {"exclude_nodes": []},
                                          "its ONNX export keeps its own QDQ nodes")
    try:
        space = onnx_space.space(float_outcome.entry.path / "artifact", floor.entry.path / "artifact",
                                 runner.spec({}).preprocess, x)
    except ValueError as error:
        raise StepFailed(f"{runner.name}: search: {error}") from None
    own = runner.spec({})  # the other calibration methods, and per-channel weights, tried on the floor if it fails
    space.variants = {method: {"calibration_method": method} for method in CALIBRATION_METHODS
                      if method != own.calibration_method}
    if not own.per_channel:
        space.variants["per_channel"] = {"per_channel": True}
    return _Opened(space, float_outcome, _node_details(space, "exclude_nodes"))


# a candidate's timing loop under objective: latency (the recipe's benchmark schedule times the chosen one again)
LATENCY_TIMING = {"warmup_runs": 10, "warmup_seconds": 0.5, "min_runs": 50, "min_seconds": 1.5, "max_runs": 100000,
                  "max_seconds": 5.0}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # ONNX static int8
RANK_SAMPLES = 64  # samples of the search part the TFLite and ONNX nodes are ranked on
SPACES = {"tfjs_graph": _tfjs, "tfjs_layers": _tfjs, "tflite": _tflite, "onnx": _onnx}


class _Candidates:
    """Builds and scores candidates as cached steps of their own."""

    def __init__(self, ctx: StepContext, name: str, budget):
        from converter.store import Store

        self.ctx, self.name, self.budget = ctx, name, budget
        self.store = ctx.store or Store(ctx.out.parent)
        self.count = 0  # candidates tried so far
        self.within_noise = ctx.config["search"].get("within_noise", "fail")
        self.float_weight_bytes = 1
        self.space = None

    def spec(self, keys: dict[str, Any]):
        from converter.recipe.schema import Export

        return TypeAdapter(Export).validate_python({**self.ctx.config["export"], **keys, "name": self.name})

    def export(self, keys: dict[str, Any], required: bool = False):
        """The export with `keys` over the searched export's own, as a fixed export with them would be planned;
        `required`: a failure fails the search (the float reference), else it is the candidate's verdict."""
        from converter.executor import materialize
        from converter.plan import Step, _versions, export_config
        from converter import formats

        spec = self.spec(keys)
        roles = ["model", "class_names"] + (["calibration"] if spec.needs_calibration() else [])
        export_parents = {role: self.ctx.step.parents[role] for role in roles if role in self.ctx.step.parents}
        step = Step("export", f"export {self.name} (search candidate)", export_config(spec), export_parents, {},
                    _versions(*formats.FORMATS[spec.format].tools), {"name": self.name})
        parents = {role: self.ctx.parents[role] for role in export_parents}
        quiet = (lambda message: None if message.startswith(f"export {self.name}:") else self.ctx.log(message))
        outcome = materialize(step, self.store, parents, self.ctx.recompute, quiet)
        if outcome.error is not None and required:
            raise StepFailed(f"{self.name}: {outcome.error}")
        return outcome

    def score(self, artifact: Entry, fmt: str):
        from converter import backends
        from converter.executor import materialize
        from converter.plan import Step, _versions

        backend = self.ctx.config["backend"]
        step = Step("score", f"score {self.name} candidate on {backend}",
                    {"backend": backend, "format": fmt, "batch_size": self.ctx.config["batch_size"]},
                    {"artifact": artifact.id, "data": self.ctx.step.parents["data"],
                     "outputs": self.ctx.step.parents["outputs"]}, {}, {**_versions(), **backends.versions(backend)})
        parents = {"artifact": artifact, "data": self.ctx.parents["data"], "outputs": self.ctx.parents["outputs"]}
        return materialize(step, self.store, parents, self.ctx.recompute, self.ctx.log)

    def latency(self, artifact: Entry, fmt: str) -> dict[str, Any]:
        """The candidate's latency row on the latency backend (1 thread, batch 1), a cached `latency` step of its own:
        the config and parents of a fixed export's row with LATENCY_TIMING, timed on the first search sample."""
        from converter import backends
        from converter.executor import materialize
        from converter.plan import Step, _machine_key, _versions

        backend = self.ctx.config["search"].get("latency_backend") or self.ctx.config["backend"]
        step = Step("latency", f"time {self.name} candidate on {backend}, 1 thread(s), batch 1",
                    {"backend": backend, "format": fmt, "threads": 1, "batch": 1, "timing": LATENCY_TIMING,
                     "machine": _machine_key()},
                    {"artifact": artifact.id, "input": self.ctx.step.parents["data"]}, {},
                    {**_versions(), **backends.versions(backend)})
        outcome = materialize(step, self.store, {"artifact": artifact, "input": self.ctx.parents["data"]},
                              self.ctx.recompute, lambda message: None)
        return {"backend": backend, **(outcome.record or {}), **({"error": outcome.error} if outcome.error else {})}

    def trial(self, assignment: dict[str, str], phase: str, objective: str, float_bytes: int, variant: str | None = None):
        from converter.budget import failures
        from converter.search.strategy import Trial

        self.count += 1
        keys = {**self.space.export_keys(assignment), **self.space.variants.get(variant, {})}
        made = self.export(keys)
        summary = self.space.summary(assignment)
        record: dict[str, Any] = {"phase": phase, "dtypes": summary, **keys, **({"variant": variant} if variant else {})}
        if not made.ok:
            record.update(verdict="error", reasons=[made.error])
            return Trial(0, phase, assignment, False, None, record)
        fmt = self.ctx.config["export"]["format"]
        scored = self.score(made.entry, fmt)
        weight_bytes = made.record.get("details", {}).get("weight_bytes")
        record.update(size_bytes=made.record["size_bytes"], gzip_bytes=made.record["gzip_bytes"],
                      size_ratio=round(made.record["size_bytes"] / float_bytes, 4), export_id=made.step.id,
                      weight_ratio=round(weight_bytes / self.float_weight_bytes, 4) if weight_bytes else None,
                      cached=made.cached and scored.cached, _entry=str(made.entry.path),
                      _details=made.record.get("details", {}), _notes=made.record.get("notes", []))
        if not scored.ok:
            record.update(verdict="error", reasons=[scored.error])
            return Trial(0, phase, assignment, False, None, record)
        metrics = scored.record["metrics"]
        found = failures(metrics, self.budget, self.name, self.ctx.config["backend"], _within_noise(phase, self.within_noise))
        record.update(metrics={k: metrics[k] for k in ("top1", "top1_drop", "top1_drop_ci", "top1_agreement",
                                                        "top1_agreement_ci", "cosine") if k in metrics},
                      top1_drop=metrics.get("top1_drop"),
                      verdict="passed" if not found else "within noise" if all("not surely" in str(f) for f in found)
                      else "failed",
                      reasons=[str(f) for f in found])
        value = made.record["gzip_bytes"] if objective == "gzip_size" else made.record["size_bytes"]
        if objective == "latency" and not found:  # only a candidate that holds the budget is timed
            row = self.latency(made.entry, fmt)
            record.update(latency={k: row.get(k) for k in ("backend", "p50_ms", "p90_ms", "std_ms", "n", "noisy", "error")
                                   if row.get(k) is not None})
            value = row.get("p50_ms")
            if value is None:
                record.update(verdict="error", reasons=[f"latency on {row.get('backend')}: {row.get('error')}"])
                return Trial(0, phase, assignment, False, None, record)
        timed = f", p50 {value:.3g} ms" if objective == "latency" and value is not None and not found else ""
        self.ctx.log(f"search {self.name}: trial {self.count} {phase}{f' ({variant})' if variant else ''} {summary}: "
                     f"{record['size_ratio']:.3f} of float{timed}, "
                     f"drop {_pts(metrics.get('top1_drop'))}: {record['verdict']}")
        record["shortfall"] = _shortfall(metrics, self.budget)
        return Trial(0, phase, assignment, not found, value, record, shortfall=record["shortfall"])


def _within_noise(phase: str, setting: str) -> str:
    """How a trial within noise of the budget is judged. `within_noise: fail` guards against the winner's curse: the
    bisection and the prune pick among many candidates near the budget, and the one that passes by luck would fail on
    the held-out part. The floor (every item at the most compressed level) is one candidate fixed before any is seen,
    so its measured drop is an unbiased estimate: it is judged on that, and the held-out part still has the verdict.
    (Measured on the real MobileNet: TFLite all-int8 dropped 0.4 points on the search half, rejected as within noise
    on 500 photos, and the search then chose a larger artifact that dropped 1.8 on the held-out half.)"""
    return "point" if phase == "floor" else setting


def _shortfall(metrics: dict[str, Any], budget) -> float | None:
    """How far a candidate is from its budget's first bound (the drop, the missing agreement or cosine): what
    compares two failing floors."""
    for bound, metric, sign in (("max_top1_drop", "top1_drop", 1), ("min_top1_agreement", "top1_agreement", -1),
                                ("min_cosine", "cosine", -1)):
        if getattr(budget, bound, None) is not None and metrics.get(metric) is not None:
            return round(sign * (metrics[metric] - getattr(budget, bound)), 6)
    return None


def _pts(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} pts"


def score(ctx: StepContext) -> dict[str, Any]:
    """Step `score`: one candidate on the search part in one backend: its metrics against the reference there."""
    from converter import metrics
    from converter.backends import open_runtime
    from converter.errors import ConversionError, DependencyError
    from converter.steps.data import load
    from converter.steps.outputs import outputs, primary, run_outputs

    config = ctx.config
    data = load(ctx.parents["data"])
    references = outputs(ctx.parents["outputs"])
    runtime = open_runtime(config["backend"], config["format"], ctx.parents["artifact"].path / "artifact")
    try:
        runtime.load()
        shapes = {name: tuple(array.shape[1:]) for name, array in references.items()}
        outputs_by_name = run_outputs(runtime, data.x, config["batch_size"], shapes)
        described = runtime.describe()
    except (ConversionError, DependencyError) as error:
        raise StepFailed(f"candidate fails in {config['backend']}: {error}") from None
    finally:
        runtime.close()
    first = primary(list(references), config.get("primary_output"))  # the output the budget's top-1 is about
    output, reference = outputs_by_name[first], references[first]
    measured = metrics.compare(output, reference, data.y, metrics.label_metrics(reference, data.y))
    if metrics.is_classifier(output, data.y) and data.y is not None:  # intervals, for search.within_noise
        from converter.stats import evaluation_stats

        top1, top1_reference = np.argmax(output, axis=1), np.argmax(reference, axis=1)
        measured.update(evaluation_stats(top1_reference == data.y, top1 == data.y, top1 == top1_reference))
    return {"samples": int(len(output)), "runtime": described, "metrics": measured}
