"""The accuracy-budget search (`search:` on a TF.js export): recipe keys, the revert strategy, the TF.js space, and
whole searches on a tiny model whose weights are set, not trained, so that every verdict is decided by design.

The model: digits (8x8, one channel) -> Flatten -> Dense 'outlier' (32) -> Dense 'middle' (32) -> Dense 'head' (10),
random normal weights, except that row 0 of the outlier kernel is 100: pixel (0, 0) of every digit is 0, so the
row changes nothing in float, but in uint8 its range (0..100) makes the grid step 0.39, about three times the
typical weight (0.125), which rounds the rest of that kernel to 0 (measured cosine 0.83 against the reference).
In uint16 the step is 0.0015 (cosine 0.99999), and uint8 on any other weight is an error of about 1 % of the
weight (cosine 0.99995). A budget of min_cosine 0.99 therefore holds exactly when the outlier kernel is wide.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import run_cli
from converter.errors import RecipeError
from converter.recipe.loader import load_recipe
from converter.search import tfjs_space
from converter.recipe.schema import TfjsGraphExport
from converter.search.strategy import RevertSearch, Trial

OUTLIER = "/outlier/MatMul/ReadVariableOp"  # the weight's name ends so (Keras numbers the model: model, model_1, ...)


def recipe(model_path, **search):
    return {
        "name": "search-tiny", "model": {"path": str(model_path)},
        "data": {"eval": {"source": "digits", "split": "test", "limit": 200,
                          "preprocess": {"scale": "1/16", "channels": "gray"}}},
        "exports": [{"name": "tfjs-search", "format": "tfjs_graph", "backends": ["tfjs-wasm"],
                     "search": {"budget": {"min_cosine": 0.99}, **search}}],
        "verify": {"max_top1_drop": None},
        "benchmark": {"enabled": False},
    }


# ----------------------------------------------------------------------------- recipe keys (no TensorFlow)
@pytest.mark.parametrize("export, key, text", [
    ({"format": "savedmodel", "search": {}}, "exports.0.search", "only tfjs_graph, tfjs_layers, tflite, onnx exports are searched"),
    ({"format": "onnx", "search": {}}, "exports.0.quantization", "set quantization: int8, not 'none'"),
    ({"format": "onnx", "quantization": "dynamic_int8", "search": {}}, "exports.0.quantization", "not 'dynamic_int8'"),
    ({"format": "onnx", "quantization": "int8", "exclude_nodes": ["a"], "search": {}}, "exports.0.exclude_nodes",
     "not both"),
    ({"format": "onnx", "quantization": "int8", "search": {"space": {"dtypes": ["uint8", "float32"]}}},
     "exports.0.search.space", "TF.js's"),
    ({"format": "onnx", "quantization": "int8", "search": {"backend": "tflite"}}, "exports.0.search.backend",
     "cannot run a onnx"),
    ({"format": "tflite", "search": {}}, "exports.0.quantization", "set quantization: int8, not 'none'"),
    ({"format": "tflite", "quantization": "float16", "search": {}}, "exports.0.quantization", "not 'float16'"),
    ({"format": "tflite", "quantization": "int8", "keep_float_nodes": ["a"], "search": {}}, "exports.0.keep_float_nodes",
     "not both"),
    ({"format": "tflite", "quantization": "int8", "keep_float_ops": ["MEAN"], "search": {}}, "exports.0.keep_float_ops",
     "not both"),
    ({"format": "tflite", "quantization": "int8", "search": {"space": {"dtypes": ["uint8", "float32"]}}},
     "exports.0.search.space", "TF.js's"),
    ({"format": "tflite", "quantization": "int8", "search": {"backend": "tfjs-wasm"}}, "exports.0.search.backend",
     "cannot run a tflite"),
    ({"format": "tfjs_graph", "quantize": {"uint8": ["*"]}, "search": {}}, "exports.0.quantize", "not both"),
    ({"format": "tfjs_graph", "search": {"max_trial": 3}}, "exports.0.search.max_trial", "did you mean 'max_trials'"),
    ({"format": "tfjs_graph", "search": {"objective": "latency"}}, "exports.0.search.objective",
     "dequantizes every weight to float32 at load"),
    ({"format": "onnx", "quantization": "int8", "search": {"latency_backend": "onnxruntime"}}, "exports.0.search",
     "latency_backend is for objective: latency"),
    ({"format": "onnx", "quantization": "int8", "search": {"objective": "latency", "latency_backend": "tflite"}},
     "exports.0.search.latency_backend", "cannot run a onnx"),
    ({"format": "tfjs_graph", "search": {"budget": {}}}, "exports.0.search", "budget: give at least one entry"),
    ({"format": "tfjs_graph", "search": {"holdout": 1.0}}, "exports.0.search.holdout", ""),
    ({"format": "tfjs_graph", "search": {"backend": "tflite"}}, "exports.0.search.backend", "cannot run a tfjs_graph"),
    ({"format": "tfjs_graph", "search": {"space": {"dtypes": ["uint8", "uint8"]}}}, "exports.0.search.space.dtypes",
     "each dtype at most once"),
])
def test_bad_search_keys_name_the_key(export, key, text, tmp_path):
    data = {"name": "t", "model": {"path": str(tmp_path)}, "data": {"eval": {"source": "digits"}},
            "exports": [{"name": "s", **export}]}
    with pytest.raises(RecipeError) as caught:
        load_recipe(data)
    assert str(caught.value).startswith(key) and text in str(caught.value), str(caught.value)


def test_a_tflite_search_with_float16_exits_2_naming_the_key(write_recipe, tmp_path):
    path = write_recipe({"name": "t", "model": {"path": str(tmp_path)}, "data": {"eval": {"source": "digits"}},
                         "exports": [{"name": "s", "format": "tflite", "quantization": "float16", "search": {}}]})
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: exports.0.quantization") and "int8" in lines[0], lines


def test_search_needs_eval_data_and_validate_exits_2_with_one_error_line(write_recipe, tmp_path):
    path = write_recipe({"name": "t", "model": {"path": str(tmp_path)},
                         "exports": [{"name": "s", "format": "tfjs_graph", "search": {}}]})
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: exports.0.search") and "needs data.eval" in lines[0]


def test_plan_keeps_the_held_out_part_away_from_the_search(tmp_path):
    from converter.plan import build_plan

    loaded = load_recipe(recipe(tmp_path))
    plan = build_plan(loaded)
    (export,) = plan.exports
    assert export.export.kind == "search"
    ancestors = {plan.steps[s].label for s in plan.ancestors(export.export.id)}
    assert any("search part" in label for label in ancestors)
    assert not any("holdout part" in label for label in ancestors)
    for check in export.checks.values():  # the verdict's checks read the held-out part and its own reference
        assert plan.steps[check.parents["eval_data"]].config["part"] == "holdout"
        assert check.parents["reference_outputs"] == export.reference_outputs.id


def test_split_parts_are_disjoint_and_cover_the_data():
    from converter.steps.split import indices

    search, held = indices(200, 0.5, 0, "search"), indices(200, 0.5, 0, "holdout")
    assert len(held) == 100 and not set(search) & set(held) and sorted([*search, *held]) == list(range(200))


# ----------------------------------------------------------------------------- strategy and space (no TensorFlow)
def _search(needed: set[str], items: list[str], max_trials: int = 20):
    """A search over items where a candidate holds the budget iff every item of `needed` is reverted."""
    def evaluate(assignment, phase, variant):
        reverted = {i for i, level in assignment.items() if level != "uint8"}
        size = sum(2 if level != "uint8" else 1 for level in assignment.values())
        return Trial(0, phase, assignment, needed <= reverted, size)

    return RevertSearch(items, ["uint8", "uint16"], evaluate, max_trials, saving=lambda item: 1).run()


def test_search_reverts_exactly_the_needed_items_even_when_ranked_low():
    items = [f"w{i}" for i in range(12)]
    outcome = _search({"w1", "w9"}, items)
    reverted = {i for i, level in outcome.best.assignment.items() if level == "uint16"}
    assert reverted == {"w1", "w9"}
    assert outcome.stop_reason.startswith("finished")


def test_search_cut_short_keeps_the_safe_candidate():
    outcome = _search({"w1"}, ["w0", "w1", "w2"], max_trials=1)
    assert outcome.stop_reason == "max_trials (1) reached"
    assert len(outcome.trials) == 1 and set(outcome.best.assignment.values()) == {"uint16"}


@pytest.mark.parametrize("whole_size, chosen", [(92, "whole model"), (97, "bisect")])
def test_a_whole_model_level_is_tried_once_after_the_floor_and_wins_only_when_smaller(whole_size, chosen):
    """TFLite's int16x8: every item at once, never per item. Sizes: int8 90 (fails), each float item +5."""
    from converter.search.strategy import RevertSearch, Trial

    def evaluate(assignment, phase, variant):
        levels = set(assignment.values())
        if levels == {"int16x8"}:
            return Trial(0, phase, assignment, True, whole_size)
        floats = [i for i, level in assignment.items() if level == "float"]
        return Trial(0, phase, assignment, "w0" in floats, 90 + 5 * len(floats))

    outcome = RevertSearch(["w0", "w1", "w2", "w3"], ["int8", "float"], evaluate, 20, saving=lambda i: 1,
                           whole_levels=("int16x8",)).run()
    phases = [t.phase for t in outcome.trials]
    assert phases[:3] == ["anchor", "floor", "whole model"] and phases.count("whole model") == 1
    assert outcome.best.phase == chosen and outcome.best.objective == min(whole_size, 95)
    assert ("every item at int16x8 is smaller, and chosen" in outcome.stop_reason) == (chosen == "whole model")


@pytest.mark.parametrize("drops, chosen", [({None: 3, "entropy": 2, "percentile": 5}, "entropy"),
                                           ({None: 3, "entropy": 0.5, "percentile": 5}, "entropy"),
                                           ({None: 2, "entropy": 3, "percentile": 5}, None)])
def test_variants_are_tried_on_the_floor_and_the_search_goes_on_with_the_least_bad(drops, chosen):
    """ONNX's calibration methods: each is tried with every node int8 when the recipe's fails; one that holds the
    budget (drop <= 1) is chosen, else the bisection and the prune run with the one that missed by least."""
    def evaluate(assignment, phase, variant):
        floats = {i for i, level in assignment.items() if level == "float"}
        drop = drops[variant] if not floats else 0 if "w2" in floats else 4
        return Trial(0, phase, assignment, drop <= 1, 90 + 5 * len(floats), shortfall=drop)

    outcome = RevertSearch(["w0", "w1", "w2", "w3"], ["int8", "float"], evaluate, 20, saving=lambda i: 1,
                           variants=("entropy", "percentile")).run()
    floors = [t for t in outcome.trials if t.phase in ("floor", "variant")]
    if drops["entropy"] <= 1:
        assert [t.variant for t in floors] == [None, "entropy"] and outcome.best.variant == "entropy"
        assert outcome.stop_reason == "every item at int8 holds the budget with entropy"
        return
    assert [t.variant for t in floors] == [None, "entropy", "percentile"]
    later = [t for t in outcome.trials if t.phase in ("bisect", "prune")]
    assert later and {t.variant for t in later} == {chosen}
    assert {i for i, level in outcome.best.assignment.items() if level == "float"} == {"w2"}


def test_max_seconds_stops_the_search_and_keeps_the_best_so_far():
    """No candidate is started after max_seconds: the anchor (every item wide) was, and is kept."""
    import time

    def evaluate(assignment, phase, variant):
        time.sleep(0.2)
        return Trial(0, phase, assignment, set(assignment.values()) == {"uint16"}, len(assignment))

    outcome = RevertSearch(["w0", "w1"], ["uint8", "uint16"], evaluate, 20, saving=lambda i: 1, max_seconds=0.1).run()
    assert len(outcome.trials) == 1 and outcome.best is outcome.trials[0]
    assert outcome.stop_reason == "max_seconds (0.1) reached after 1 candidates"


def test_quantize_block_resolves_to_the_assignment_under_tfjs_glob_rules():
    import fnmatch

    names = ["a/conv[1]/w", "a/conv2/w", "a/dense/w", "a/dense/b"]
    for assignment in ({"a/conv[1]/w": "uint16", "a/conv2/w": "uint8", "a/dense/w": "uint8", "a/dense/b": "uint8"},
                       {"a/conv[1]/w": "float32", "a/conv2/w": "uint8", "a/dense/w": "float16", "a/dense/b": "uint8"}):
        block = tfjs_space.to_quantize(assignment)
        resolved = {}
        for name in names:  # tfjs: an explicit glob wins; a list holding '*' takes every weight no list claims
            explicit = [d for d, globs in block.items() if any(g != "*" and fnmatch.fnmatch(name, g) for g in globs)]
            star = [d for d, globs in block.items() if "*" in globs]
            resolved[name] = (explicit or star or ["float32"])[0]
        assert resolved == assignment


@pytest.mark.parametrize("ranking", ["quantization_error", "range"])
def test_an_outlier_weight_ranks_first(ranking):
    rng = np.random.default_rng(0)
    plain = [tfjs_space.Weight(f"w{i}", (64, 32), rng.normal(0, 0.125, (64, 32)).astype(np.float32)) for i in range(3)]
    outlier = rng.normal(0, 0.125, (64, 32)).astype(np.float32)
    outlier[0, :] = 100.0
    ranked = tfjs_space.rank(plain + [tfjs_space.Weight("outlier", (64, 32), outlier)], "uint8", ranking)
    assert ranked[0][0] == "outlier"


# ----------------------------------------------------------------------------- whole searches (TF, TF.js in Node)
def _dense_model(folder: Path, outlier) -> Path:
    """Flatten -> Dense 'outlier' (32, relu) -> Dense 'middle' (32, relu) -> Dense 'head' (10): seeded He-like
    weights, then `outlier(kernel)` edits the first kernel in place; saved as h5."""
    from converter.tf_env import keras

    k = keras()
    inputs = k.Input((8, 8, 1))
    x = k.layers.Flatten()(inputs)
    x = k.layers.Dense(32, activation="relu", name="outlier")(x)
    x = k.layers.Dense(32, activation="relu", name="middle")(x)
    model = k.Model(inputs, k.layers.Dense(10, name="head")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers[2:]:
        kernel, bias = layer.get_weights()
        kernel = rng.normal(0, 1 / np.sqrt(kernel.shape[0]), kernel.shape).astype(np.float32)
        if layer.name == "outlier":
            outlier(kernel)
        layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    path = folder / "model.h5"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    def row(kernel):
        kernel[0, :] = 100.0

    return _dense_model(tmp_path_factory.mktemp("search"), row)


def test_search_keeps_only_the_outlier_weight_wide_and_judges_on_held_out_data(outlier_model, tmp_path):
    from converter import api
    from converter.steps.split import indices

    report = api.run(recipe(outlier_model), out=tmp_path / "run")
    artifact = report.artifact("tfjs-search")
    search = artifact["details"]["search"]
    (outlier,) = [w["name"] for w in search["weights"] if w["name"].endswith(OUTLIER)]
    wide = {w["name"]: w["dtype"] for w in search["weights"] if w["dtype"] != "uint8"}
    assert wide == {outlier: "uint16"}, search["stop_reason"]
    assert search["quantize"] == {"uint16": [outlier], "uint8": ["*"]}
    assert len(search["trials"]) <= 20 and search["trials"][search["chosen_trial"] - 1]["verdict"] == "passed"
    assert any(t["dtypes"] == {"uint8": 6} and t["verdict"] == "failed" for t in search["trials"])
    # the verdict comes from the held-out part: its own samples and its own reference
    (evaluation,) = artifact["evaluations"]
    assert evaluation["per_sample"]["n"] == len(indices(200, 0.5, 0, "holdout")) == search["search_samples"]
    assert search["holdout_reference"]["samples"] == 100 and report.data["reference"]["samples"] == 200
    assert evaluation["status"] == "passed" and report.passed
    # the published artifact is the chosen map, and the report shows the log and the pasteable map
    manifest = json.loads((tmp_path / "run" / "artifacts" / "tfjs-search" / "model.json").read_text())["weightsManifest"]
    dtypes = {w["name"]: w.get("quantization", {}).get("dtype") for g in manifest for w in g["weights"]
              if w["dtype"] == "float32" and not w["name"].endswith("/channel_scale")}
    assert dtypes[outlier] == "uint16" and {d for n, d in dtypes.items() if n != outlier} == {"uint8"}
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Search: tfjs-search" in markdown and f"  - {outlier}" in markdown and "(chosen)" in markdown
    # a wider budget reuses every candidate it shares with the first search
    again = api.run(recipe(outlier_model, budget={"min_cosine": 0.9}), out=tmp_path / "again")
    first = {json.dumps(t["quantize"], sort_keys=True) for t in search["trials"]}
    shared = [t for t in again.artifact("tfjs-search")["details"]["search"]["trials"]
              if json.dumps(t["quantize"], sort_keys=True) in first]
    assert shared and all(t["cached"] for t in shared)


@pytest.fixture(scope="module")
def channel_outlier_model(tmp_path_factory):
    """As outlier_model, but the outlier is one output channel of the first kernel (as a batch norm folded into a
    kernel makes one): one uint8 range for the kernel rounds its other channels to 0; one per channel does not."""
    def channel(kernel):
        kernel[:, 0] *= 1000.0

    return _dense_model(tmp_path_factory.mktemp("search"), channel)


def test_per_channel_kernels_let_every_weight_stay_uint8(channel_outlier_model, tmp_path):
    """The same search with and without per-channel kernels: one range per weight must keep the outlier kernel
    wide; per channel, every weight uint8 holds the budget (the floor) and the pasteable map says per_channel."""
    from converter import api

    spec = recipe(channel_outlier_model)
    per_tensor = spec["exports"][0]
    spec["exports"] = [per_tensor, {**per_tensor, "name": "tfjs-search-pc",
                                    "search": {**per_tensor["search"], "space": {"per_channel": True}}}]
    report = api.run(spec, out=tmp_path / "run")
    plain, channel = (report.artifact(n)["details"]["search"] for n in ("tfjs-search", "tfjs-search-pc"))
    assert any(w["dtype"] != "uint8" for w in plain["weights"] if "outlier" in w["name"] and "MatMul" in w["name"])
    assert channel["stop_reason"] == "every item at uint8 holds the budget", channel["stop_reason"]
    assert channel["quantize"] == {"uint8": ["*"], "per_channel": ["*"]}
    # fewer weight bytes (the 74 float32 channel scales against the outlier kernel's 2048 extra uint16 bytes); the
    # model.json is larger, by the unfused ops, which on a model this small outweighs the weights
    chosen = [s["trials"][s["chosen_trial"] - 1] for s in (channel, plain)]
    assert chosen[0]["weight_ratio"] < chosen[1]["weight_ratio"]
    manifest = json.loads((tmp_path / "run" / "artifacts" / "tfjs-search-pc" / "model.json").read_text())["weightsManifest"]
    assert sum(w["name"].endswith("/channel_scale") for g in manifest for w in g["weights"]) == 3
    assert report.artifact("tfjs-search-pc")["evaluations"][0]["status"] == "passed"


def test_a_search_cut_short_still_yields_its_best_valid_candidate(outlier_model, tmp_path):
    from converter import api

    report = api.run(recipe(outlier_model, max_trials=1), out=tmp_path / "run")
    search = report.artifact("tfjs-search")["details"]["search"]
    assert search["stop_reason"] == "max_trials (1) reached" and len(search["trials"]) == 1
    assert search["quantize"] == {"uint16": ["*"]} and search["chosen_passed"]
    assert report.passed


def test_a_search_whose_backend_cannot_run_fails_that_export_with_the_reason(outlier_model, tmp_path, monkeypatch):
    from converter import api

    monkeypatch.setenv("CONVERT_NODE_MODULES", str(tmp_path))  # no TF.js packages there
    report = api.run(recipe(outlier_model), out=tmp_path / "run")
    artifact = report.artifact("tfjs-search")
    assert not report.passed and "the search scores candidates on tfjs-wasm, which cannot run here" in artifact["error"]
    assert (tmp_path / "run" / "report.md").is_file()


@pytest.mark.slow
def test_the_real_model_search_recipe_runs_shortened(tmp_path):
    from conftest import ROOT, SHARED

    if not (SHARED / "models" / "mobilenet_2_5_128_tf.h5").is_file():
        pytest.skip("../shared (the real MobileNet and photos) is not beside the project")
    searched = yaml.safe_load((ROOT / "recipes" / "mobilenet-imagenet-search.yaml").read_text())["exports"]
    tfjs = next(e for e in searched if e["name"] == "tfjs-search")  # the suite's time: this export alone, shortened
    tfjs["search"]["max_trials"] = 4
    result = run_cli("run", "recipes/mobilenet-imagenet-search.yaml", "--out", str(tmp_path / "run"), "--no-benchmark",
                     "--set", "verify.limit=200", "--set", f"exports={json.dumps([tfjs])}", cwd=ROOT)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    artifact = next(a for a in report["artifacts"] if a["name"] == "tfjs-search")
    search = artifact["details"]["search"]
    assert len(search["trials"]) <= 4 and search["search_samples"] == 100
    assert all(e["per_sample"]["n"] == (e.get("sample_cap") or 100) for e in artifact["evaluations"])  # a slow backend's cap
    assert (tmp_path / "run" / "artifacts" / "tfjs-search" / "model.json").is_file()


def test_the_prune_order_does_not_depend_on_hashing():
    """Reverts of equal saving are tried in rank order: the same search in two processes (each with its own
    string-hash seed) tries the same candidates."""
    import subprocess
    import sys

    script = ("from converter.search.strategy import RevertSearch, Trial\n"
              "items = [f'w{i}' for i in range(16)]\n"
              "def evaluate(a, phase, variant):\n"
              "    reverted = {i for i, l in a.items() if l != 'uint8'}\n"
              "    return Trial(0, phase, a, {'w0', 'w7'} <= reverted, len(reverted))\n"
              "out = RevertSearch(items, ['uint8', 'uint16'], evaluate, 40, saving=lambda i: 1).run()\n"
              "print([sorted(i for i, l in t.assignment.items() if l != 'uint8') for t in out.trials])\n")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(runs) == 1


# ----------------------------------------------------------------------------- TFLite: int8 with nodes kept float
# The model: digits -> Conv2D 'conv' (8, relu) -> Flatten -> Dense 'hidden' (16, relu) -> Dense 'head' (10), random
# He-normal weights, except head's bias for class 0: -1000. Class 0 is never the top-1 in float, but int8 activations
# share one scale per tensor: the head's output range (-1000..~5) makes its step 3.9, which rounds the other nine
# logits (spread of a few units) to one or two levels. Measured on the 200 samples: the all-int8 model agrees with
# the float top-1 on 5.5 % of them, with the head kept float on 99.5 %, with any other node kept float on 5.5-6 %.
# A budget of min_top1_agreement 0.9 therefore holds exactly when the head is float.
# The head's whole-tensor SQNR is the best of the four nodes (51.7 dB: the huge logit is the signal), so a ranking
# by it puts the head last; the median channel's SQNR puts it first (0 dB: nine of its ten channels round to 0).
HEAD = "StatefulPartitionedCall:0"  # the head's node name, as keep_float_nodes takes it


def tflite_recipe(model_path, **search):
    digits = {"source": "digits", "split": "test", "limit": 200, "preprocess": {"scale": "1/16", "channels": "gray"}}
    return {
        "name": "search-tflite", "model": {"path": str(model_path)},
        "data": {"eval": digits, "calibration": {**digits, "split": "train"}},
        "exports": [{"name": "tflite-search", "format": "tflite", "quantization": "int8", "calibration_samples": 50,
                     "search": {"budget": {"min_top1_agreement": 0.9}, **search}}],
        "verify": {"max_top1_drop": None, "parity_samples": 8},
        "benchmark": {"enabled": False},
    }


@pytest.fixture(scope="module")
def logit_outlier_model(tmp_path_factory):
    from converter.tf_env import keras

    k = keras()
    inputs = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(16, activation="relu", name="hidden")(x)
    model = k.Model(inputs, k.layers.Dense(10, name="head")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if not layer.get_weights():
            continue
        kernel, bias = layer.get_weights()
        kernel = rng.normal(0, np.sqrt(2 / np.prod(kernel.shape[:-1])), kernel.shape).astype(np.float32)
        bias = rng.normal(0, 0.1, bias.shape).astype(np.float32)
        if layer.name == "head":
            bias[0] = -1000.0
        layer.set_weights([kernel, bias])
    path = tmp_path_factory.mktemp("search") / "logit_outlier.h5"
    model.save(path)
    return path


def test_tflite_search_keeps_only_the_outlier_node_float_found_by_its_rank(logit_outlier_model, tmp_path):
    import math

    from converter import api
    from converter.steps.split import indices

    report = api.run(tflite_recipe(logit_outlier_model), out=tmp_path / "run")
    artifact = report.artifact("tflite-search")
    search = artifact["details"]["search"]
    nodes = search["nodes"]
    ranked = sorted(nodes, key=lambda n: -n["sensitivity"])
    assert ranked[0]["name"] == HEAD, nodes  # the median channel SQNR ranks the wrecked node first
    assert search["keep_float_nodes"] == [HEAD] and search["recipe"] == {"keep_float_nodes": [HEAD]}, search["stop_reason"]
    assert {n["name"]: n["level"] for n in nodes if n["level"] != "int8"} == {HEAD: "float"}
    # the all-int8 floor failed; the whole model at int16x8 was tried once (its 16-bit activations resolve the nine
    # logits the -1000 one squeezes: it holds, but it is larger than int8 with the head float, so it is not chosen);
    # then the search went straight to the head: a bisection over the ranked nodes whose every step held (the head in
    # each prefix), and no prune trial, which a ranking that put the head anywhere but first would have needed
    phases = [t["phase"] for t in search["trials"]]
    assert phases[:3] == ["anchor", "floor", "whole model"] and search["trials"][1]["verdict"] == "failed"
    whole = search["trials"][2]
    assert whole["quantization"] == "int16x8" and whole["verdict"] == "passed", whole
    chosen = search["trials"][search["chosen_trial"] - 1]
    assert whole["size_bytes"] > chosen["size_bytes"] == min(t["size_bytes"] for t in search["trials"] if t["verdict"] == "passed")
    assert "prune" not in phases and len(phases) <= 3 + math.ceil(math.log2(len(nodes))), phases
    assert all(t["verdict"] == "passed" for t in search["trials"] if t["phase"] == "bisect")
    # the verdict: the chosen artifact on the held-out part, in LiteRT
    (evaluation,) = artifact["evaluations"]
    assert evaluation["backend"] == "tflite" and evaluation["status"] == "passed" and report.passed
    assert evaluation["per_sample"]["n"] == len(indices(200, 0.5, 0, "holdout"))
    assert evaluation["metrics"]["top1_agreement"] >= 0.9
    # the published artifact is that map: the head's FULLY_CONNECTED runs in float, the others in int8
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "run" / "artifacts" / "tflite-search" / "model.tflite"))
    kinds = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            kinds.setdefault(op["op_name"], []).append(interpreter._get_tensor_details(op["inputs"][1], 0)["dtype"].__name__)
    assert kinds == {"CONV_2D": ["int8"], "FULLY_CONNECTED": ["int8", "float32"]}, kinds
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Search: tflite-search" in markdown and "`keep_float_nodes:`" in markdown and f"- {HEAD}" in markdown


# ----------------------------------------------------------------------------- ONNX: static QDQ with nodes kept float
# The same model as the TFLite search's: onnxruntime's static QDQ gives activations one uint8 scale per tensor
# too, so the head's output range (-1000..~5) rounds its other nine logits away, and only the head kept float
# restores the float top-1.
def onnx_recipe(model_path, **search):
    recipe = tflite_recipe(model_path, **search)
    recipe["exports"] = [{"name": "onnx-search", "format": "onnx", "quantization": "int8", "calibration_samples": 50,
                          "search": {"budget": {"min_top1_agreement": 0.9}, **search}}]
    return recipe


def test_onnx_search_keeps_only_the_outlier_node_float_found_by_its_rank(logit_outlier_model, tmp_path):
    import math

    import onnx

    from converter import api

    report = api.run(onnx_recipe(logit_outlier_model), out=tmp_path / "run")
    artifact = report.artifact("onnx-search")
    search = artifact["details"]["search"]
    nodes = search["nodes"]
    ranked = sorted(nodes, key=lambda n: -n["sensitivity"])
    head = ranked[0]["name"]
    assert "head" in head, nodes  # the local error ranks the wrecked node first
    phases = [t["phase"] for t in search["trials"]]
    assert phases[:4] == ["anchor", "floor", "variant", "variant"], phases
    assert all(t["verdict"] == "failed" for t in search["trials"][1:4])
    # the other calibration methods were tried on the floor; the search went on with the one that missed by least
    floors = search["trials"][1:4]
    closest = min(floors, key=lambda t: t["shortfall"]).get("calibration_method")
    assert [t.get("calibration_method") for t in floors] == [None, "entropy", "percentile"]
    assert {t.get("calibration_method") for t in search["trials"][4:]} == {closest}
    assert search["exclude_nodes"] == [head], search["stop_reason"]
    assert search["recipe"] == {"exclude_nodes": [head], **({"calibration_method": closest} if closest else {})}
    assert "prune" not in phases and len(phases) <= 4 + math.ceil(math.log2(len(nodes))), phases
    (evaluation,) = artifact["evaluations"]
    assert evaluation["backend"] == "onnxruntime" and evaluation["status"] == "passed" and report.passed
    assert evaluation["metrics"]["top1_agreement"] >= 0.9
    # the published artifact is that map: the head reads float tensors, every other matrix product quantized ones
    graph = onnx.load(str(tmp_path / "run" / "artifacts" / "onnx-search" / "model.onnx")).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    reads_quantized = {n.name: any(i in dequantized for i in n.input) for n in graph.node
                       if n.op_type in ("Conv", "MatMul", "Gemm")}
    assert reads_quantized.pop(head) is False and reads_quantized and all(reads_quantized.values()), reads_quantized
    # report.html plots the trials: drop against size, the chosen one ringed
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'alt="search onnx-search: top-1 drop against size per trial" src="data:image/png;base64,' in page


def test_onnx_search_for_latency_times_every_candidate_within_budget_and_keeps_the_fastest(logit_outlier_model, tmp_path):
    from converter import api

    report = api.run(onnx_recipe(logit_outlier_model, objective="latency"), out=tmp_path / "run")
    search = report.artifact("onnx-search")["details"]["search"]
    passed = [t for t in search["trials"] if t["verdict"] == "passed"]
    assert passed and all(t["latency"]["backend"] == "onnxruntime" and t["latency"]["n"] >= 50 for t in passed)
    assert not any("latency" in t for t in search["trials"] if t["verdict"] != "passed")  # only those are timed
    fastest = min(passed, key=lambda t: t["latency"]["p50_ms"])
    assert search["trials"][search["chosen_trial"] - 1] is not None and search["chosen_passed"]
    assert search["trials"][search["chosen_trial"] - 1]["latency"]["p50_ms"] == fastest["latency"]["p50_ms"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| p50 latency (ms) |" in markdown and "Objective latency: each candidate that held the budget was timed" in markdown


def test_a_searched_artifact_that_fails_on_the_held_out_part_is_explained_as_built(channel_outlier_model, tmp_path):
    """No candidate holds an impossible budget (uint16 with one range per weight leaves the outlier kernel's other
    channels a few percent off); the closest is kept, fails on the held-out part, and is explained with the keys it
    was built with (the search's chosen map), not the search's own config."""
    from converter import api

    spec = recipe(channel_outlier_model, budget={"min_cosine": 0.99999}, max_trials=2,
                  space={"dtypes": ["uint8", "uint16"]})
    report = api.run(spec, out=tmp_path / "run")
    artifact = report.artifact("tfjs-search")
    search = artifact["details"]["search"]
    assert not search["chosen_passed"] and not report.passed
    (evaluation,) = artifact["evaluations"]
    explained = evaluation["explain"]
    assert "error" not in explained, explained.get("error")
    assert explained["quantization"] == "uint16" == TfjsGraphExport(
        name="x", format="tfjs_graph", quantize=search["recipe"]["quantize"]).quantization_name()


def test_a_bias_corrected_search_keeps_the_corrected_biases_uint16_outside_the_search(channel_outlier_model, tmp_path):
    """With bias correction the three Dense biases are corrected and stay uint16, fixed: the search ranks and
    reverts the kernels only, and the pasteable map carries both the biases' dtype and the correction."""
    from converter import api

    spec = recipe(channel_outlier_model)
    spec["exports"][0]["search"]["space"] = {"per_channel": True, "bias_correction": True}
    report = api.run(spec, out=tmp_path / "run")
    artifact = report.artifact("tfjs-search")
    search = artifact["details"]["search"]
    fixed = {w["name"]: w["dtype"] for w in search["weights"] if not w["searched"]}
    assert len(fixed) == 3 and set(fixed.values()) == {"uint16"} and all(n.endswith("BiasAdd/ReadVariableOp") or
                                                                          "bias" in n.lower() for n in fixed), fixed
    assert search["stop_reason"] == "every item at uint8 holds the budget", search["stop_reason"]
    assert {w["dtype"] for w in search["weights"] if w["searched"]} == {"uint8"}
    assert search["quantize"]["bias_correction"] is True and search["quantize"]["uint8"] == ["*"]
    assert artifact["details"]["bias_corrected"] == 3 and artifact["evaluations"][0]["status"] == "passed"
    assert "fixed (corrected bias)" in (tmp_path / "run" / "report.md").read_text()
