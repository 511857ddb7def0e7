"""TF.js in the browser against TF.js in Node on the real MobileNet v1 0.25 (128x128) from ../shared.

    python benchmarks/browser_backends.py --images 300 --out /tmp/browser-bench

1. Builds the Keras MobileNet with the shared weights (tf_keras), saves it as a SavedModel and exports a
   float TF.js graph model with the toolkit's exporter.
2. Accuracy: the first --images photos of ../shared/data/imagenet-sample (sorted class folders;
   shorter side 146, centre crop 128, x/127.5 - 1) through TensorFlow (the reference) and through every
   TF.js backend; top-1 agreement with TensorFlow and the largest output difference.
3. Latency: converter.benchmark.measure() (one worker process per row, timed inside the page or Node)
   at batch 1 and --batch, every backend, wasm at 1 and 2 threads.

Writes results.json and results.md to --out and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
BROWSER = ["browser-webgl", "browser-wasm", "browser-wasm-nosimd", "browser-cpu", "browser-webgpu"]
NODE = ["tfjs-wasm", "tfjs-cpu"]


def build(out: Path) -> Path:
    """The MobileNet SavedModel and its TF.js graph export (reused when present)."""
    from converter.tf_env import keras  # sets TF_USE_LEGACY_KERAS before TensorFlow
    from converter.exports import tfjs as tfjs_export
    from converter.exports.base import ExportContext
    from converter.model_ref import ModelRef
    from converter.recipe.schema import TfjsGraphExport

    graph = out / "tfjs_graph"
    if (graph / "model.json").is_file():
        return graph
    model = keras().applications.MobileNet(alpha=0.25, input_shape=(128, 128, 3),
                                           weights=str(SHARED / "models" / "mobilenet_2_5_128_tf.h5"))
    model.save(str(out / "savedmodel"), save_format="tf")
    tfjs_export.export_graph(ModelRef(out / "savedmodel", "keras"), TfjsGraphExport(name="g", format="tfjs_graph"),
                             graph, ExportContext(recipe_hash="bench"))
    return graph


def photos(n: int) -> tuple[np.ndarray, list[str]]:
    """The first n photos (sorted class folders), preprocessed as MobileNet expects."""
    from PIL import Image

    folders = sorted(p for p in (SHARED / "data" / "imagenet-sample").iterdir() if p.is_dir())[:n]
    images, names = [], []
    for folder in folders:
        path = sorted(folder.iterdir())[0]
        image = Image.open(path).convert("RGB")
        scale = 146 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - 128) // 2, (image.height - 128) // 2
        image = image.crop((left, top, left + 128, top + 128))
        images.append(np.asarray(image, np.float32) / 127.5 - 1.0)
        names.append(path.name)
    return np.stack(images), names


def reference(out: Path, x: np.ndarray) -> np.ndarray:
    from converter.runtimes.tf_runtime import TFRuntime

    with TFRuntime(out / "savedmodel") as runtime:
        return np.concatenate([runtime.run([x[i:i + 32]])[0] for i in range(0, len(x), 32)])


def accuracy(graph: Path, x: np.ndarray, ref: np.ndarray, backends: list[str]) -> list[dict]:
    from converter.errors import BackendUnavailable
    from converter.formats import open_runtime

    rows = []
    for backend in backends:
        started = time.perf_counter()
        try:
            with open_runtime(backend, "tfjs_graph", graph, 2 if "wasm" in backend else None) as runtime:
                out = np.concatenate([runtime.run([x[i:i + 32]])[0] for i in range(0, len(x), 32)])
                settings = runtime.describe()["settings"]
        except BackendUnavailable as err:
            rows.append({"backend": backend, "skipped": str(err)})
            continue
        agree = float((out.argmax(1) == ref.argmax(1)).mean())
        rows.append({"backend": backend, "images": len(x), "top1_agreement": agree,
                     "disagreements": int((out.argmax(1) != ref.argmax(1)).sum()),
                     "max_abs_diff": float(np.abs(out - ref).max()), "seconds": time.perf_counter() - started,
                     "settings": {k: v for k, v in settings.items() if k != "browser"}})
        print(f"accuracy {backend}: {agree:.4f} ({rows[-1]['disagreements']} of {len(x)} differ), "
              f"max |diff| {rows[-1]['max_abs_diff']:.2e}, {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def latency(graph: Path, x: np.ndarray, backends: list[str], batch: int, timing) -> list[dict]:
    from converter.benchmark.measure import measure

    rows = []
    for backend in backends:
        for threads in ((1, 2) if backend in ("browser-wasm", "tfjs-wasm") else (1,)):
            for size in (1, batch):
                load_before = os.getloadavg()[0]
                row = measure(graph, "tfjs_graph", backend, threads, size, timing, x)
                row["loadavg_1min_before"] = load_before
                rows.append(row)
                if "error" in row:
                    print(f"latency {backend} t{threads} b{size}: {row['error']}", flush=True)
                    continue
                settings = row["runtime"]["settings"]
                print(f"latency {backend} t{threads}(in force {settings.get('threads')}) b{size}: p50 {row['p50_ms']:.2f} ms, "
                      f"{1000 * size / row['p50_ms']:.1f} img/s, first {row['first_inference_ms']:.1f} ms, n {row['n']}, "
                      f"load {load_before:.2f}", flush=True)
    return rows


def markdown(acc: list[dict], lat: list[dict]) -> str:
    lines = ["| backend | top-1 agreement with TF | differing | max abs diff |", "|---|---|---|---|"]
    for r in acc:
        if "skipped" in r:
            lines.append(f"| {r['backend']} | skipped: {r['skipped']} | | |")
        else:
            lines.append(f"| {r['backend']} | {100 * r['top1_agreement']:.2f} % | {r['disagreements']} of {r['images']} | {r['max_abs_diff']:.2e} |")
    lines += ["", "| backend | threads (in force) | batch | p50 ms | p90 ms | images/s (p50) | first inference ms | load ms | load avg |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in lat:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['threads']} | {r['batch']} | {r['error'][:80]} | | | | | |")
            continue
        s = r["runtime"]["settings"]
        lines.append(f"| {r['backend']} | {r['threads']} ({s.get('threads')}) | {r['batch']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{1000 * r['batch'] / r['p50_ms']:.1f} | {r['first_inference_ms']:.1f} | {r['load_ms']:.0f} | "
                     f"{r.get('loadavg_1min_before', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("/tmp/browser-bench"))
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--backends", nargs="+", default=BROWSER + NODE, help="default: every browser and Node backend")
    args = parser.parse_args()
    from converter.benchmark.schedule import Timing

    args.out.mkdir(parents=True, exist_ok=True)
    graph = build(args.out)
    x, _ = photos(args.images)
    results: dict = {"images": len(x)}
    if not args.skip_accuracy:
        ref = reference(args.out, x)
        results["accuracy"] = accuracy(graph, x, ref, args.backends)
    if not args.skip_latency:
        timing = Timing(warmup_runs=5, warmup_seconds=1.0, min_runs=20, min_seconds=3.0, max_runs=10000, max_seconds=15.0)
        results["timing"] = timing.as_dict()
        results["latency"] = latency(graph, x, args.backends, args.batch, timing)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results.get("accuracy", []), results.get("latency", []))
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
