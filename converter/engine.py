"""The pipeline engine: source -> stages -> exports -> checks, every step cached by content id.

Ids are hash(kind, config, parent ids, input contents): an unchanged prefix of a recipe is served from
`<out>/.cache`, and anything not finished is never taken as done (see converter/store.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from converter import formats
from converter.artifact_files import describe_files, place, remove_stale
from converter.data.dataset import Dataset
from converter.data.loading import check_shape, fingerprint, load_dataset
from converter.errors import ConversionError, ModelError
from converter.evaluate import check_backend, parity_verdict, run_batches
from converter.exports.base import ExportContext
from converter.model_ref import ModelRef
from converter.recipe.loader import LoadedRecipe
from converter.recipe.schema import ExportBase
from converter.store import Store, hash_path, make_id

STAGES = {
    "train": "converter.stages.train:run",
    "prune": "converter.stages.prune:run",
    "qat": "converter.stages.qat:run",
}


@dataclass
class RunOptions:
    out_dir: Optional[Path] = None
    force: bool = False
    evaluate: bool = True
    benchmark: Optional[bool] = None  # None: as the recipe says
    benchmark_overrides: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None


class Engine:
    def __init__(self, loaded: LoadedRecipe, options: RunOptions):
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.options = options
        self.out_dir = Path(options.out_dir or Path("runs") / self.recipe.name).resolve()
        self.store = Store(self.out_dir / ".cache")
        self.log = options.log
        self._models: dict[str, ModelRef] = {}
        self._ids: dict[str, str] = {}
        self._datasets: dict[str, Optional[Dataset]] = {}
        self._outputs: dict[tuple[str, str], np.ndarray] = {}
        self._forced: set[str] = set()  # entries already recomputed in this run under --force
        self._fingerprints: dict[str, Optional[str]] = {}
        self._machine: Optional[dict[str, Any]] = None
        self.cache_hits = 0
        self.computed = 0

    # ------------------------------------------------------------------ ids
    def model_id(self, name: str) -> str:
        if name not in self._ids:
            if name == "source":
                spec = self.recipe.model
                content = hash_path(spec.path) if spec.path else (
                    hash_path(Path(spec.weights)) if spec.weights not in ("none", "imagenet") else spec.weights)
                self._ids[name] = make_id("source", spec.model_dump(mode="json"), content)
            else:
                index, stage = self._stage(name)
                parent = self.model_id(self.recipe.stage_input(index))
                self._ids[name] = make_id(stage.stage, stage.model_dump(mode="json"), parent, self.data_fingerprint("train"))
        return self._ids[name]

    def _forget_once_if_forced(self, entry: str) -> None:
        """Under --force, drop a stored entry the first time this run meets it."""
        if self.options.force and entry not in self._forced:
            self.store.forget(entry)
            self._forced.add(entry)

    def _stage(self, name: str):
        for index, stage in enumerate(self.recipe.pipeline):
            if stage.stage_name == name:
                return index, stage
        raise KeyError(name)

    def export_id(self, export: ExportBase) -> str:
        config = export.model_dump(mode="json", exclude={"name", "verify", "backends", "model"})
        parts: list[Any] = [config, self.model_id(self.recipe.export_model(export))]
        if getattr(export, "quantization", "none") in ("int8", "int16x8"):
            parts.append(self.data_fingerprint("calibration"))
        if export.format.startswith("tfjs"):  # model.json carries the build hash and class names
            parts += [self.loaded.build_hash(export.name), self.class_names()]
        return make_id(f"export-{export.format}", *parts)

    # ------------------------------------------------------------------ models
    def model(self, name: str) -> ModelRef:
        """The ModelRef of a pipeline node, from the store or computed now."""
        if name in self._models:
            return self._models[name]
        entry = self.model_id(name)
        self._forget_once_if_forced(entry)
        if not self.store.has(entry):
            self._compute_model(name, entry)
        else:
            self.cache_hits += 1
        meta = self.store.meta(entry)
        path = Path(meta["external_path"]) if meta.get("external_path") else self.store.path(entry) / "model"
        ref = ModelRef(path, meta["kind"], meta["signature"])
        self._models[name] = ref
        return ref

    def _compute_model(self, name: str, entry: str) -> None:
        from converter.formats import load_symbol
        from converter.sources import io_signature, load_source

        self.computed += 1
        with self.store.create(entry) as (tmp, meta):
            if name == "source":
                self.log(f"loading model {self.recipe.model.path or self.recipe.model.application}")
                ref = load_source(self.recipe.model, tmp / "model")
                if ref.path != tmp / "model":
                    meta["external_path"] = str(ref.path)
            else:
                index, stage = self._stage(name)
                parent = self.model(self.recipe.stage_input(index))
                data = self.dataset("train")
                self.log(f"stage {name}: {stage.stage} on {len(data)} samples")
                started = time.perf_counter()
                result = load_symbol(STAGES[stage.stage])(parent, stage, data, tmp / "model")
                meta["seconds"] = round(time.perf_counter() - started, 2)
                meta["notes"], meta["details"] = result.notes, result.details
                ref = ModelRef(tmp / "model", "keras", "serving_default")
            meta["kind"], meta["signature"] = ref.kind, ref.signature
            meta["io"] = io_signature(ref)
            meta["stage"] = name

    def io(self, name: str) -> dict[str, Any]:
        self.model(name)
        return self.store.meta(self.model_id(name))["io"]

    def input_shape(self) -> list[Optional[int]]:
        inputs = self.io("source")["inputs"]
        if len(inputs) != 1:
            raise ModelError(f"model: {len(inputs)} inputs; the toolkit verifies single-input models only")
        return inputs[0]["shape"][1:]

    # ------------------------------------------------------------------ data
    def dataset(self, role: str) -> Optional[Dataset]:
        if role not in self._datasets:
            spec = self.recipe.data.for_calibration() if role == "calibration" else getattr(self.recipe.data, role)
            if spec is None:
                self._datasets[role] = None
            else:
                shape = self.input_shape()
                data = load_dataset(spec, shape)
                check_shape(data, shape, f"data.{role}")
                self._datasets[role] = data
        return self._datasets[role]

    def class_names(self) -> Optional[list[str]]:
        for role in ("eval", "train", "calibration"):
            spec = getattr(self.recipe.data, role)
            if spec is not None and spec.source in ("folder", "digits"):
                data = self.dataset(role)
                return data.class_names if data is not None else None
        return None

    def eval_data(self) -> Optional[Dataset]:
        data = self.dataset("eval")
        if data is not None and self.recipe.verify.limit:
            data = data.take(self.recipe.verify.limit)
        return data

    def parity_inputs(self) -> np.ndarray:
        n = self.recipe.verify.parity_samples
        data = self.dataset("eval")
        if data is not None:
            return data.x[:n]
        shape = [d if d is not None else 1 for d in self.input_shape()]
        return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)

    def calibration(self, n: int) -> np.ndarray:
        data = self.dataset("calibration")
        order = np.random.default_rng(0).permutation(len(data))[:n]
        return data.x[np.sort(order)]

    # ------------------------------------------------------------------ reference outputs
    def tf_outputs(self, name: str, what: str, x: np.ndarray) -> np.ndarray:
        """First output of pipeline model `name` on inputs `x` (what: 'parity' or 'eval'), cached."""
        key = (name, what)
        if key not in self._outputs:
            from converter.runtimes.tf_runtime import TFRuntime

            entry = make_id(f"outputs-{what}", self.model_id(name), self._data_key(what))
            if self.store.has(entry) and not self.options.force:
                self._outputs[key] = np.load(self.store.path(entry) / "outputs.npy")
            else:
                ref = self.model(name)
                with TFRuntime(ref.path, signature=ref.signature) as runtime:
                    output = run_batches(runtime, x, self.recipe.verify.batch_size)
                with self.store.create(entry) as (tmp, _):
                    np.save(tmp / "outputs.npy", output)
                self._outputs[key] = output
        return self._outputs[key]

    def _data_key(self, what: str) -> Any:
        verify = self.recipe.verify
        return [what, self.data_fingerprint("eval"), verify.parity_samples if what == "parity" else verify.limit]

    def data_fingerprint(self, role: str) -> Optional[str]:
        """Hash of a dataset's spec and file contents, computed once per run (folders are read in full)."""
        if role not in self._fingerprints:
            spec = self.recipe.data.for_calibration() if role == "calibration" else getattr(self.recipe.data, role)
            self._fingerprints[role] = fingerprint(spec) if spec is not None else None
        return self._fingerprints[role]

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        from converter.report import build_report

        self.store.clean_temporaries()
        started = time.perf_counter()
        reference = self.reference()
        artifacts = []
        for index, export in enumerate(self.recipe.exports, 1):
            self.log(f"[{index}/{len(self.recipe.exports)}] {export.name}")
            artifacts.append(self.run_export(export, reference))
        remove_stale(self.out_dir / "artifacts", {e.name for e in self.recipe.exports})
        return build_report(self, reference, artifacts, time.perf_counter() - started)

    def reference(self) -> dict[str, Any]:
        name = self.recipe.main_line()
        ref = self.model(name)
        result: dict[str, Any] = {"model": name, "format": ref.kind, "id": self.model_id(name), "metrics": {}}
        data = self.eval_data() if self.options.evaluate and self.recipe.verify.enabled else None
        if data is not None:
            from converter.metrics import label_metrics

            self.log(f"reference {name}: evaluating on {len(data)} samples")
            output = self.tf_outputs(name, "eval", data.x)
            result["metrics"] = label_metrics(output, data.y)
            result["samples"] = len(data)
        return result

    def run_export(self, export: ExportBase, reference: dict[str, Any]) -> dict[str, Any]:
        entry = self.export_id(export)
        model_name = self.recipe.export_model(export)
        record: dict[str, Any] = {
            "name": export.name, "format": export.format, "quantization": export.quantization_name(),
            "path": f"artifacts/{export.name}", "model": model_name, "id": entry,
            "parents": self.lineage(model_name), "evaluations": [], "parity": [], "latency": [],
        }
        self._forget_once_if_forced(entry)
        if self.store.has(entry):
            self.cache_hits += 1
        else:
            try:
                self._export(export, entry, model_name)
            except ConversionError as exc:
                record["error"] = f"{export.name}: {exc}"
                self.log(f"export {export.name}: FAILED: {exc}")
                return record
        meta = self.store.meta(entry)
        record.update({k: meta[k] for k in ("notes", "details", "seconds") if k in meta})
        record.update({k: v for k, v in describe_files(self.store.path(entry) / "artifact").items()})
        place(self.store.path(entry) / "artifact", self.out_dir / "artifacts" / export.name)
        self.check(export, entry, model_name, record, reference)
        self.time_latency(export, entry, record)
        return record

    def _export(self, export: ExportBase, entry: str, model_name: str) -> None:
        ref = self.model(model_name)
        ctx = ExportContext(recipe_hash=self.loaded.build_hash(export.name), class_names=self.class_names(),
                            calibration=self.calibration if self.recipe.data.for_calibration() else None,
                            warn=lambda message: self.log(f"warning: {message}"))
        self.log(f"export {export.name}: {export.format} ({export.quantization_name()})")
        self.computed += 1
        with self.store.create(entry) as (tmp, meta):
            started = time.perf_counter()
            (tmp / "artifact").mkdir()
            result = formats.exporter(export.format)(ref, export, tmp / "artifact", ctx)
            meta["seconds"] = round(time.perf_counter() - started, 2)
            meta["notes"], meta["details"] = result.notes, result.details

    def schedule(self):
        from converter.benchmark.schedule import Schedule

        return Schedule.from_recipe(self.recipe.benchmark, self.options.benchmark_overrides)

    def time_latency(self, export: ExportBase, entry: str, record: dict[str, Any]) -> None:
        """Latency rows per (backend, threads, batch), each measured in its own process, cached."""
        from converter.benchmark.measure import measure, plan

        schedule = self.schedule()
        wanted = self.options.benchmark if self.options.benchmark is not None else schedule.enabled
        if not wanted or record.get("error"):
            return
        machine = self.machine()
        machine_key = {k: machine.get(k) for k in ("cpu_model", "cores", "versions")}
        backends = [b for b in self.backends(export) if not schedule.backends or b in schedule.backends]
        failed = {e["backend"] for e in record["evaluations"] if "error" in e}
        for backend, threads, batch in plan([b for b in backends if b not in failed], schedule):
            row_id = make_id("latency", entry, backend, threads, batch, schedule.timing, machine_key,
                             self._data_key("parity"))
            row = None if self.options.force else self.store.get_json(row_id)
            if row is None:
                self.log(f"time {export.name} on {backend}, {threads} thread(s), batch {batch}")
                row = measure(self.store.path(entry) / "artifact", export.format, backend, threads, batch, schedule,
                              self.parity_inputs()[:1])
                if "error" not in row:
                    self.store.put_json(row_id, row)
                self.computed += 1
            else:
                self.cache_hits += 1
            row.pop("id", None)
            record["latency"].append(row)

    def machine(self) -> dict[str, Any]:
        """The machine's fingerprint (CPU, ISA flags, versions), taken once per run."""
        if self._machine is None:
            from converter.benchmark.machine import fingerprint as machine_fingerprint

            self._machine = machine_fingerprint()
        return self._machine

    def stages(self) -> list[dict[str, Any]]:
        """What each pipeline stage did (from the store: notes, details, seconds)."""
        rows = []
        for stage in self.recipe.pipeline:
            entry = self.model_id(stage.stage_name)
            meta = self.store.get_json(entry) or {}
            rows.append({"name": stage.stage_name, "stage": stage.stage, "id": entry,
                         "input": self.recipe.stage_input(self.recipe.pipeline.index(stage)),
                         **{k: meta[k] for k in ("seconds", "notes", "details") if k in meta}})
        return rows

    def lineage(self, name: str) -> list[dict[str, str]]:
        chain = []
        while True:
            chain.append({"stage": name, "id": self.model_id(name)})
            if name == "source":
                return chain
            name = self.recipe.stage_input(self._stage(name)[0])

    def backends(self, export: ExportBase) -> list[str]:
        able = formats.FORMATS[export.format].backends
        return [b for b in (export.backends or able) if b in able]

    def check(self, export: ExportBase, entry: str, model_name: str, record: dict[str, Any],
              reference: dict[str, Any]) -> None:
        """Parity against the source model and evaluation against the reference, per backend, cached."""
        from converter.budget import failures

        verify = self.recipe.verify
        data = self.eval_data() if self.options.evaluate and verify.enabled else None
        budget = verify.budget().merged(export.verify)
        for backend in self.backends(export):
            check_id = make_id("check", entry, backend, self._data_key("parity"), self._data_key("eval") if data else None)
            result = None if self.options.force else self.store.get_json(check_id)
            if result is None:
                self.log(f"check {export.name} on {backend}")
                parity_x = self.parity_inputs()
                result = check_backend(
                    self.store.path(entry) / "artifact", export.format, backend, export.name,
                    parity_x, self.tf_outputs(model_name, "parity", parity_x),
                    data, self.tf_outputs(reference["model"], "eval", data.x) if data is not None else None,
                    reference["metrics"], verify.batch_size)
                if "error" not in result:
                    self.store.put_json(check_id, result)
                self.computed += 1
            else:
                self.cache_hits += 1
            parity = parity_verdict(result["parity"], export.format, record["quantization"], export.name) \
                if "parity" in result else {}
            if parity:
                record["parity"].append(parity)
            evaluation = {"backend": backend, "runtime": result.get("runtime"), "metrics": result.get("metrics", {}),
                          "budget": {k: v for k, v in budget.model_dump().items() if v is not None}}
            if "error" in result:
                evaluation["error"] = result["error"]
            reasons = [result["error"]] if "error" in result else []
            reasons += parity.get("reasons", [])
            reasons += failures(evaluation["metrics"], budget, export.name, backend)
            evaluation["passed"] = not reasons
            evaluation["reasons"] = reasons
            record["evaluations"].append(evaluation)
