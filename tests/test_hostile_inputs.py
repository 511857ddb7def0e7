"""Hostile and careless inputs: recipes, --set, environment values, paths and model files.

Each must end in a user error (one `error:` line per problem, exit 2) or a refusal to load code, never in a
traceback, a hang or the model's code running without `trust_model_code`. The recipe failure classes are
fixtures in tests/fixtures/recipes (checked by test_recipe.py); those that need --set or an environment
variable are in tests/fixtures/recipes/with_set_or_env, with `# set:` and `# env:` headers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import FIXTURE_RECIPES, ROOT, run_cli
from converter import api
from converter.errors import ModelError, RecipeError, RecipeErrors
from converter.keras_code import code_in_config
from converter.recipe.loader import load_recipe
from converter.recipe.schema import ModelSpec

CONTEXT = sorted((FIXTURE_RECIPES / "with_set_or_env").glob("*.yaml"))
SEVERAL = FIXTURE_RECIPES / "several_problems.yaml"
TINY = "model: {application: MobileNetV2, args: {alpha: 0.35, input_shape: [32, 32, 3], classes: 10}}\n"


def headers(path: Path) -> tuple[str, str, list[str], dict[str, str]]:
    lines = path.read_text().splitlines()
    key, _, text = lines[0].removeprefix("# expect:").partition("|")
    sets = [line.removeprefix("# set: ") for line in lines if line.startswith("# set: ")]
    env = dict(line.removeprefix("# env: ").split("=", 1) for line in lines if line.startswith("# env: "))
    return key.strip(), text.strip(), sets, env


# ----------------------------------------------------------------------------- --set and environment
@pytest.mark.parametrize("recipe", CONTEXT, ids=[p.stem for p in CONTEXT])
def test_override_and_environment_fixtures(recipe, monkeypatch):
    key, text, sets, env = headers(recipe)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, sets)
    message = str(caught.value)
    assert message.startswith(key), message
    assert text in message, message


# Classes that used to end in a traceback (or, for the alias bomb, in minutes of expansion).
CLI_CASES = ["empty_value", "recursive_alias", "unhashable_key", "unknown_user_home", "long_path_component",
             "deep_nesting", "alias_bomb", "with_set_or_env/set_into_plain_value", "with_set_or_env/set_value_not_yaml",
             "with_set_or_env/env_value_not_yaml"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_says_one_error_line_and_exits_2(case):
    path = FIXTURE_RECIPES / f"{case}.yaml"
    _, text, sets, env = headers(path)
    result = run_cli("validate", str(path), *[arg for s in sets for arg in ("--set", s)], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


# ----------------------------------------------------------------------------- every problem at once
def test_every_problem_is_reported_at_once_in_line_order():
    with pytest.raises(RecipeErrors) as caught:
        api.validate(SEVERAL)
    errors = caught.value.errors
    assert [e.key for e in errors] == ["model.wat", "data.eval.limit", "exports.0.opset", "exports.1.shard_size",
                                       "benchmark.threads.0"]
    assert [e.line for e in errors] == [3, 5, 7, 8, 9]
    assert str(caught.value).splitlines() == [str(e) for e in errors]
    assert caught.value.key == "model.wat" and caught.value.line == 3  # a RecipeError like any other


def test_reference_problems_are_reported_together(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: refs\n" + TINY +
                      "pipeline:\n  - {stage: prune, input: nowhere}\n"
                      "exports:\n  - {name: a, format: tflite, quantization: int8}\n"
                      "  - {name: a, format: onnx, model: prunned}\n")
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(recipe)
    assert [(e.key, e.line) for e in caught.value.errors] == [
        ("pipeline.0.input", 4), ("pipeline.0.stage", 4), ("exports.0.quantization", 6), ("exports.1.name", 7),
        ("exports.1.model", 7)]
    assert "did you mean 'prune'" in str(caught.value)


def test_set_problems_come_after_the_recipes_and_name_their_origin(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: ok\n" + TINY + "exports:\n  - {name: a, format: onnx, opset: x}\n")
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(recipe, ["benchmark.threads=[x]", "exports.0.quantization=int9"])
    assert [str(e).split(":")[0] for e in caught.value.errors] == [
        f"exports.0.opset (line 4 of {recipe})", "exports.0.quantization (from --set)", "benchmark.threads.0 (from --set)"]


def test_cli_prints_every_problem_on_its_own_error_line():
    result = run_cli("validate", str(SEVERAL))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 5 and all(line.startswith("error: ") for line in lines), lines


# ----------------------------------------------------------------------------- YAML that is fine
def test_merge_keys_fill_in_without_overriding(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: merged\n" + TINY + "data: {calibration: {source: digits}}\nexports:\n"
                      "  - {<<: &int8 {format: tflite, quantization: int8, per_channel: false}, name: a}\n"
                      "  - {<<: [*int8, {calibration_samples: 7}], name: b, per_channel: true}\n")
    exports = load_recipe(recipe).recipe.exports
    assert [(e.name, e.quantization, e.per_channel, e.calibration_samples) for e in exports] == [
        ("a", "int8", False, 100), ("b", "int8", True, 7)]


def test_environment_values_are_typed_as_plain_scalars(tmp_path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: env\n" + TINY + "data:\n  eval:\n    source: digits\n    limit: ${LIMIT}\n    x_key: \"${KEY}\"\n"
                      "exports:\n  - {name: a, format: savedmodel}\n")
    monkeypatch.setenv("LIMIT", "12")
    monkeypatch.setenv("KEY", "12")
    spec = load_recipe(recipe).recipe.data.eval
    assert (spec.limit, spec.x_key) == (12, "12")
    monkeypatch.setenv("LIMIT", "{a: *b}")  # stays text: an environment value is never read as a structure
    with pytest.raises(RecipeError, match=r"data.eval.limit \(line 6 .*valid integer"):
        load_recipe(recipe)


# ----------------------------------------------------------------------------- paths
def good_recipe(folder: Path, model_path: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"name: ok\nmodel: {{path: {json.dumps(model_path)}}}\nexports:\n  - {{name: a, format: savedmodel}}\n")
    return recipe


def test_symbolic_link_loops_are_user_errors(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(RecipeError, match=r"model.path .*symbolic link loop"):
        load_recipe(good_recipe(tmp_path, "loop/model.h5"))
    with pytest.raises(RecipeError, match="cannot read recipe .*symbolic link loop"):
        load_recipe(tmp_path / "loop" / "recipe.yaml")


def test_a_folder_given_as_the_recipe_is_a_user_error(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe .*Is a directory"):
        load_recipe(tmp_path)


def run_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python without the power to ignore file permissions (root keeps it otherwise)."""
    command = [sys.executable, "-c", code, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be enforced")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


OUTCOME = """
import sys
from converter.errors import UserError
try:
    {call}
    print("ok")
except UserError as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""


def test_unreadable_recipe_and_data_are_user_errors(tmp_path):
    recipe = good_recipe(tmp_path, "model.h5")
    (tmp_path / "model.h5").write_bytes(b"")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "photos").mkdir()
    data_recipe = tmp_path / "data.yaml"
    data_recipe.write_text(recipe.read_text() + "data:\n  eval: {source: folder, path: locked/photos}\n")
    try:
        recipe.chmod(0)
        (tmp_path / "locked").chmod(0)
        result = run_unprivileged(OUTCOME.format(call="from converter.recipe.loader import load_recipe; "
                                                      "load_recipe(sys.argv[1])"), str(recipe))
        assert result.stdout.startswith("RecipeError: ") and "cannot read recipe" in result.stdout, result
        assert "Permission denied" in result.stdout
        result = run_unprivileged(OUTCOME.format(call="from converter.recipe.loader import load_recipe; "
                                                      "load_recipe(sys.argv[1])"), str(data_recipe))
        assert result.stdout.startswith("RecipeErrors: data.eval.path (line 6 of"), result
        assert "cannot access" in result.stdout and "Permission denied" in result.stdout
    finally:
        recipe.chmod(0o644)
        (tmp_path / "locked").chmod(0o755)


def test_a_model_folder_with_an_unreadable_entry_is_a_model_error(tmp_path):
    folder = tmp_path / "savedmodel"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    secret = folder / "variables" / "variables.data-00000-of-00001"
    secret.write_bytes(b"weights")
    try:
        secret.chmod(0)
        result = run_unprivileged(OUTCOME.format(call="from converter.sources import model_fingerprint; "
                                                      "model_fingerprint(__import__('pathlib').Path(sys.argv[1]))"),
                                  str(folder))
    finally:
        secret.chmod(0o644)
    assert result.stdout.startswith(f"ModelError: model.path: cannot read {secret} (Permission denied)"), result


# ----------------------------------------------------------------------------- Keras configs (no TensorFlow)
def test_code_in_config_finds_every_kind_of_code():
    def found(config):
        return sorted(kind for kind, _ in code_in_config(config))

    layer = {"class_name": "Dense", "config": {"name": "d", "activation": "relu"}, "module": "keras.layers"}
    assert found({"class_name": "Functional", "config": {"layers": [layer]}, "module": "tf_keras.src.engine.functional"}) == []
    assert found({"layers": [{"class_name": "Lambda", "config": {"function": ["bytecode"], "function_type": "lambda"}}]}) == [
        "Lambda layers"]
    assert found({"class_name": "ResidualWrapper", "config": {"residual_fn": "x", "residual_fn_type": "lambda"}}) == [
        "Python functions"]
    assert found({"class_name": "__lambda__", "config": {"value": "bytecode"}}) == ["Python functions"]
    assert found({"class_name": "Dense", "module": "antigravity", "config": {}}) == ["Python modules to import"]
    assert found({"class_name": "function", "config": "os.system", "module": "keras.activations"}) == ["Python functions"]
    assert found({"class_name": "ClassMethod", "config": {"cls_symbol": "io.gfile.GFile", "method_name": "close"}}) == [
        "TensorFlow calls that are not tensor ops"]
    assert found({"class_name": "InstanceMethod", "config": {"attr_name": "__reduce__"}}) == [
        "TensorFlow calls that are not tensor ops"]
    deep: dict = {"class_name": "Lambda", "config": {}}
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = {"config": {"layers": [deep]}}
    assert found(deep) == ["Lambda layers"]


# ----------------------------------------------------------------------------- Keras model files (TensorFlow)
def marker_model(marker: Path, nested: bool = False):
    """Dense then a Lambda whose Python code appends to `marker` each time it runs (on load, too)."""
    from converter.tf_env import keras

    k = keras()
    code = eval(f"lambda t: (open({str(marker)!r}, 'a').write('ran'), t)[1]")
    inputs = k.Input((4,))
    x = k.layers.Dense(2)(inputs)
    if nested:
        x = k.Sequential([k.Input((2,)), k.layers.Lambda(code)], name="inner")(x)
    else:
        x = k.layers.Lambda(code)(x)
    return k.Model(inputs, x)


def load(path: Path, out: Path, trusted: bool):
    from converter.sources import load_source

    return load_source(ModelSpec.model_validate({"path": str(path), "trust_model_code": trusted}), out)


def assert_refused_then_trusted(path: Path, tmp_path: Path, marker: Path, run_keras: bool = True) -> None:
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelError, match=r"contains Lambda layers.*trust_model_code"):
        load(path, tmp_path / "refused", trusted=False)
    assert not marker.exists(), "the model's code ran without trust"
    ref = load(path, tmp_path / "trusted", trusted=True)
    if run_keras and ref.kind == "keras":
        ref.load_keras()
    assert marker.exists(), "the fixture must really carry code that runs once trusted"


@pytest.mark.parametrize("suffix", [".hdf5", ".keras"])
def test_hdf5_lambda_needs_trust_whatever_the_file_is_called(tmp_path, suffix):
    marker = tmp_path / "ran"
    marker_model(marker).save(tmp_path / "model.h5")  # HDF5, then named as tf_keras would still load it
    (tmp_path / "model.h5").rename(tmp_path / f"model{suffix}")
    assert_refused_then_trusted(tmp_path / f"model{suffix}", tmp_path, marker)


def test_nested_lambda_needs_trust(tmp_path):
    marker = tmp_path / "ran"
    marker_model(marker, nested=True).save(tmp_path / "nested.h5")
    assert_refused_then_trusted(tmp_path / "nested.h5", tmp_path, marker)


RESPELLINGS = {
    "compact": lambda text: json.dumps(json.loads(text), separators=(",", ":")),
    "space_before_colon": lambda text: json.dumps(json.loads(text), separators=(", ", " : ")),
    "unicode_escape": lambda text: text.replace('"Lambda"', '"\\u004cambda"'),
}


@pytest.mark.parametrize("respelling", RESPELLINGS)
def test_savedmodel_lambda_needs_trust_however_its_json_is_spelled(tmp_path, respelling):
    from converter.tf_env import keras

    keras()
    from tf_keras.protobuf import saved_metadata_pb2

    marker = tmp_path / "ran"
    folder = tmp_path / "savedmodel"
    marker_model(marker).save(str(folder))
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    for node in metadata.nodes:
        node.metadata = RESPELLINGS[respelling](node.metadata)
    (folder / "keras_metadata.pb").write_bytes(metadata.SerializeToString())
    assert b'"class_name": "Lambda"' not in (folder / "keras_metadata.pb").read_bytes()
    assert_refused_then_trusted(folder, tmp_path, marker)


def test_keras_metadata_kept_in_saved_model_pb_is_read_too(tmp_path):
    """SavedModels from before TF 2.5 keep the Keras configs in saved_model.pb; tf_keras still reads them."""
    from converter.tf_env import keras
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    marker = tmp_path / "ran"
    folder = tmp_path / "savedmodel"
    marker_model(marker).save(str(folder))
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((folder / "saved_model.pb").read_bytes())
    for node in metadata.nodes:
        saved_model.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = node.metadata
    (folder / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    (folder / "keras_metadata.pb").unlink()
    marker.unlink()
    with pytest.raises(ModelError, match=r"saved_model.pb object .*Lambda"):
        load(folder, tmp_path / "refused", trusted=False)
    keras().models.load_model(str(folder), compile=False)
    assert marker.exists(), "tf_keras runs the code of this layout"


def test_keras_zip_naming_a_foreign_module_needs_trust(tmp_path, monkeypatch):
    """The .keras loader imports the `module` a config names, even in Keras' safe mode."""
    from converter.tf_env import keras

    k = keras()
    marker = tmp_path / "imported"
    module = f"convert_probe_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write('imported')\n"
                                           "from tf_keras.src.engine.functional import Functional\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inputs = k.Input((4,))
    k.Model(inputs, k.layers.Dense(2)(inputs)).save(tmp_path / "plain.keras")
    with zipfile.ZipFile(tmp_path / "plain.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["module"], config["registered_name"] = module, None
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "probe.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError, match=rf"Python modules to import.*'{module}'.*trust_model_code"):
        load(tmp_path / "probe.keras", tmp_path / "refused", trusted=False)
    assert not marker.exists()
    load(tmp_path / "probe.keras", tmp_path / "trusted", trusted=True)
    assert marker.exists(), "the fixture must really make Keras import the module"


def op_layer_model(path: Path) -> None:
    from converter.tf_env import keras, tf

    k, t = keras(), tf()
    inputs = k.Input((4,))
    x = k.layers.Dense(3)(inputs) * 2.0
    x = t.concat([t.nn.relu6(x), t.reshape(x, (-1, 3))], axis=-1)[:, :4]
    k.Model(inputs, t.math.reduce_sum(t.cast(x, "float32"), axis=-1, keepdims=True)).save(path)


def test_op_layers_of_tensor_ops_load_without_trust(tmp_path):
    op_layer_model(tmp_path / "ops.h5")
    ref = load(tmp_path / "ops.h5", tmp_path / "out", trusted=False)
    assert ref.kind == "keras"


def test_op_layer_calling_a_non_op_needs_trust(tmp_path):
    import h5py

    op_layer_model(tmp_path / "ops.h5")
    with h5py.File(tmp_path / "ops.h5", "r+") as handle:
        config = handle.attrs["model_config"]
        handle.attrs["model_config"] = config.replace('"function": "nn.relu6"', '"function": "io.gfile.remove"')
    with pytest.raises(ModelError, match=r"TensorFlow calls that are not tensor ops.*tf\.io\.gfile\.remove"):
        load(tmp_path / "ops.h5", tmp_path / "out", trusted=False)
