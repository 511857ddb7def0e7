"""The model zoo: every tf.keras.applications family that builds offline, through every format and backend.

Heavy (about an hour on 2 cores): marked `zoo`, left out of the default suite; `make zoo` runs it and writes
docs/support-matrix.md from its results (`python tests/test_zoo.py --matrix`). Each cell (family x export x
backend) must verify, or fail with a limitation listed in LIMITATIONS below, whose message names the construct,
the format and the change that works; and no traceback may reach the console.
Run one family: `python -m pytest -m zoo tests/test_zoo.py -k MobileNetV3Small`.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("CONVERT_ZOO_RESULTS", ROOT / "runs" / "zoo"))
MATRIX = ROOT / "docs" / "support-matrix.md"

# family -> (application, constructor arguments): the smallest member, at the smallest input it accepts
FAMILIES = {
    "MobileNet": ("MobileNet", {"alpha": 0.25, "input_shape": [32, 32, 3]}),
    "MobileNetV2": ("MobileNetV2", {"alpha": 0.35, "input_shape": [32, 32, 3]}),
    "MobileNetV3": ("MobileNetV3Small", {"input_shape": [32, 32, 3]}),
    "EfficientNet": ("EfficientNetB0", {"input_shape": [32, 32, 3]}),
    "EfficientNetV2": ("EfficientNetV2B0", {"input_shape": [32, 32, 3]}),
    "ResNet": ("ResNet50", {"input_shape": [32, 32, 3]}),
    "ResNetV2": ("ResNet50V2", {"input_shape": [32, 32, 3]}),
    "DenseNet": ("DenseNet121", {"input_shape": [32, 32, 3]}),
    "NASNet": ("NASNetMobile", {"input_shape": [32, 32, 3]}),
    "Inception": ("InceptionV3", {"input_shape": [75, 75, 3]}),
    "InceptionResNet": ("InceptionResNetV2", {"input_shape": [75, 75, 3]}),
    "Xception": ("Xception", {"input_shape": [71, 71, 3]}),
    "ConvNeXt": ("ConvNeXtTiny", {"input_shape": [32, 32, 3]}),
    "RegNet": ("RegNetX002", {"input_shape": [32, 32, 3]}),
}
EXPORTS = [
    {"name": "tflite", "format": "tflite"},
    {"name": "tflite-int8", "format": "tflite", "quantization": "int8", "calibration_samples": 16},
    {"name": "onnx", "format": "onnx"},
    {"name": "onnx-int8", "format": "onnx", "quantization": "int8", "calibration_samples": 16},
    {"name": "tfjs-graph", "format": "tfjs_graph"},
    {"name": "tfjs-graph-uint8", "format": "tfjs_graph", "quantize": {"uint8": ["*"]}},
    {"name": "tfjs-layers", "format": "tfjs_layers"},
]
# Documented limitations: (family regex, export regex, backend regex or None for the export itself, the message's
# pattern, the section of docs/troubleshooting.md that explains it). A failing cell must match one.
LIMITATIONS = [
    (".*", ".*(int8|uint8)", ".*", r"every output is exactly 0, while the source's outputs reach only",
     "quantization-collapses"),  # random weights: logits of ~1e-12, below any quantized output's range
    ("InceptionResNet", "tfjs-layers", ".*", r"CustomScaleLayer is a layer tfjs-layers 4\.22 does not have.*tfjs_graph",
     "a-tfjs-layers-model-that-does-not-load"),
    ("ConvNeXt", "tfjs-layers", ".*", r"LayerScale is a layer tfjs-layers 4\.22 does not have.*tfjs_graph",
     "a-tfjs-layers-model-that-does-not-load"),
    ("ConvNeXt", "tfjs-graph.*", ".*", r"Erfc comes from the exact GELU.*approximate=True", "unsupported-ops"),
    # TF.js has no Erfc kernel; ONNX converts it through Erf (converter/exports/onnx_ops.py)
    ("RegNet", "onnx.*|tfjs-.*", ".*", r"grouped convolutions? .*(export this model as tflite|tfjs-layers has no)",
     "unsupported-ops"),  # Conv2D(groups=N): XLA-compiled PartitionedCalls neither tf2onnx nor TF.js can run
    ("EfficientNet", "tflite-int8", ".*", r"parity cosine", "quantization-collapses"),  # SiLU + squeeze-excite
    ("MobileNetV3", "tfjs-layers", ".*", r"weights are not set: Conv/BatchNorm/.*export the model as tfjs_graph",
     "a-tfjs-layers-model-that-does-not-load"),  # layer names with '/': their weights nest in the h5 and are lost
]


def recipe(family: str) -> dict:
    application, args = FAMILIES[family]
    synthetic = {"source": "synthetic", "count": 16, "seed": 0}
    return {
        "name": f"zoo-{family.lower()}",
        "model": {"application": application, "weights": "none",
                  "args": {**args, "classes": 10, "classifier_activation": None}},
        "data": {"eval": synthetic, "calibration": {**synthetic, "seed": 1}},
        "exports": EXPORTS,
        # random weights and inputs: no labels, so parity and agreement with the reference are the checks
        "verify": {"max_top1_drop": None, "batch_size": 16},
        "benchmark": {"enabled": False},
    }


def cells(report: dict) -> list[dict]:
    """One row per (export, backend): 'passed', or the failure's first reason."""
    rows = []
    for artifact in report["artifacts"]:
        if artifact.get("error"):
            rows.append({"export": artifact["name"], "backend": None, "status": "failed", "reason": artifact["error"]})
            continue
        for evaluation in artifact["evaluations"]:
            status = evaluation["status"]
            reason = (evaluation.get("reasons") or [evaluation.get("skipped") or ""])[0] if status != "passed" else ""
            rows.append({"export": artifact["name"], "backend": evaluation["backend"], "status": status,
                         "reason": reason, "samples": evaluation.get("samples"),
                         "cosine": evaluation.get("metrics", {}).get("cosine"),
                         "notes": artifact.get("notes", [])})
    return rows


def limitation(family: str, row: dict):
    for fam, export, backend, pattern, anchor in LIMITATIONS:
        if re.fullmatch(fam, family) and re.fullmatch(export, row["export"]) and (
                row["backend"] is None or re.fullmatch(backend, row["backend"])) and re.search(pattern, row["reason"]):
            return anchor
    return None


@pytest.mark.zoo
@pytest.mark.parametrize("family", list(FAMILIES))
def test_zoo_family(family, tmp_path):
    from conftest import run_cli

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(family), sort_keys=False))
    out = RESULTS / family
    import shutil
    import time

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = run_cli("run", str(path), "--out", str(out), env={"CONVERT_CACHE_DIR": os.environ.get(
        "CONVERT_ZOO_CACHE", str(Path.home() / ".cache" / "convert-zoo"))})
    seconds = time.perf_counter() - started
    console = done.stdout + done.stderr
    assert done.returncode in (0, 1), console[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = cells(report)
    for row in rows:
        row["limitation"] = limitation(family, row) if row["status"] in ("failed", "error") else None
    command = "python -m pytest " + " ".join(sys.argv[1:])  # the run that produced this family's cells
    (out / "cells.json").write_text(json.dumps({"family": family, "application": FAMILIES[family][0],
                                                "args": FAMILIES[family][1], "seconds": round(seconds, 1),
                                                "command": command,
                                                "rows": rows, "traceback": "Traceback" in console}, indent=1))
    assert "Traceback" not in console, console[-3000:]
    unexplained = [r for r in rows if r["status"] in ("failed", "error") and r["limitation"] is None]
    assert not unexplained, json.dumps(unexplained, indent=1)


# ----------------------------------------------------------------------------- the matrix
SHORT = {"tflite": "tflite", "onnxruntime": "ort", "tfjs-cpu": "cpu", "tfjs-wasm": "wasm",
         "browser-webgl": "b-webgl", "browser-wasm": "b-wasm"}


def write_matrix() -> str:
    """docs/support-matrix.md from the results of the last zoo run (RESULTS/<family>/cells.json)."""
    found = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*/cells.json"))]
    found.sort(key=lambda r: list(FAMILIES).index(r["family"]) if r["family"] in FAMILIES else 99)
    for result in found:  # against today's LIMITATIONS: a limitation documented after the run counts
        for row in result["rows"]:
            if row["status"] in ("failed", "error"):
                row["limitation"] = limitation(result["family"], row)
    lines = [
        "# Support matrix: Keras applications through every format and backend",
        "",
        "Generated by the model zoo (`make zoo`, which runs `python -m pytest -m zoo tests/test_zoo.py` and then",
        "`python tests/test_zoo.py --matrix`). Every `tf.keras.applications` family that builds offline, with",
        "`weights: none`, 10 classes, logits out (`classifier_activation: None`), at the smallest input each accepts,",
        "on 16 seeded random samples (parity and agreement with the TensorFlow reference; no labels). Check your",
        "model's family here before you start.",
        "",
        "A cell is `ok` when the artifact loaded, ran and met its format's parity tolerance on that backend; otherwise",
        "it names the documented limitation ([troubleshooting](troubleshooting.md)) and the change that works.",
        "`repaired` means the toolkit rewrote the artifact for that format (the report's notes say what).",
        "",
    ]
    if not found:
        lines += ["No zoo run has been recorded yet: no cell of this table is known. Families to run: " + ", ".join(
            f"{f} ({FAMILIES[f][0]}, {FAMILIES[f][1]['input_shape'][0]}x{FAMILIES[f][1]['input_shape'][1]})"
            for f in FAMILIES) + ".", ""]
        MATRIX.write_text("\n".join(lines))
        return MATRIX.read_text()
    backends = [b for b in SHORT if any(r["backend"] == b for f in found for r in f["rows"])]
    exports = [e["name"] for e in EXPORTS]
    header = "| family (model, input) | export | " + " | ".join(SHORT[b] for b in backends) + " | notes |"
    lines += [header, "|" + "---|" * (len(backends) + 3)]
    footnotes: dict[str, int] = {}
    for result in found:
        shape = result["args"]["input_shape"]
        first = True
        for export in exports:
            rows = [r for r in result["rows"] if r["export"] == export]
            label = f"{result['family']} ({result['application']}, {shape[0]}x{shape[1]})" if first else ""
            first = False
            cells_ = []
            for backend in backends:
                row = next((r for r in rows if r["backend"] in (backend, None)), None)
                cells_.append(_cell(row, footnotes))
            notes = next((r.get("notes") for r in rows if r.get("notes")), [])
            repaired = sorted({_repair_kind(n) for n in notes if n.startswith("repaired")})
            lines.append(f"| {label} | {export} | " + " | ".join(cells_) + f" | {'repaired: ' + ', '.join(repaired) if repaired else ''} |")
    if footnotes:
        lines += ["", "Failures (`unexplained`: matches no documented limitation yet, an open problem):", ""]
        for text, number in footnotes.items():
            lines.append(f"{number}. {text}")
    seconds = sum(r["seconds"] for r in found)
    each = ", ".join(f"{r['family']} {r['seconds']:.0f} s" for r in found)
    lines += ["", f"Zoo run: {len(found)} families, {seconds / 60:.0f} min on this machine ({each}), by:", ""]
    lines += [f"    {command}" for command in sorted({r.get("command", "?") for r in found})]
    missing = [f for f in FAMILIES if f not in {r["family"] for r in found}]
    if missing:
        lines += ["", "Not yet run (no cell above is a claim about them): " + ", ".join(
            f"{f} ({FAMILIES[f][0]})" for f in missing) + ". Run one with `make zoo ZOO=-k<family>`."]
    lines.append("")
    MATRIX.write_text("\n".join(lines))
    return MATRIX.read_text()


def _repair_kind(note: str) -> str:
    words = note.split()  # 'repaired fused Conv2D ...', 'repaired 18 grouped convolution(s) ...', 'repaired Normalization ...'
    return " ".join(words[1:3]) if words[1] == "fused" else " ".join(words[2:4]) if words[1].isdigit() else words[1]


def _cell(row, footnotes: dict[str, int]) -> str:
    if row is None:
        return "–"
    if row["status"] == "passed":
        return "ok"
    if row["status"] == "skipped":
        return "skipped"
    text = re.sub(r"^\S+ on \S+: ", "", " ".join(row["reason"].split()))  # one line: a footnote is a list item
    text = re.sub(r"/\S+/(artifacts|[0-9a-z-]+/artifact)\S*", "<artifact>", text)
    text = re.sub(r"/\S+/source-[0-9a-f]+/model:? ", "", text)
    text = re.sub(r" This may be due to .*? -- ", " -- ", text)[:400]  # TF.js's generic reasons: the construct stays
    if row.get("limitation"):
        text += f" ([why, and the change](troubleshooting.md#{row['limitation']}))"
    number = footnotes.setdefault(text, len(footnotes) + 1)
    return f"fails ({number})" if row.get("limitation") else f"fails ({number}, unexplained)"


if __name__ == "__main__":
    if "--matrix" in sys.argv:
        print(write_matrix())
