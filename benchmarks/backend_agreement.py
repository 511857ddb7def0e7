"""Two backends' outputs for the same TF.js artifact and inputs: the largest difference and the cosine.

    python benchmarks/backend_agreement.py ARTIFACT_DIR [--format tfjs_graph] [--backends tfjs-cpu browser-webgl]
                                           [--shape 16 32 32 3]

Used for docs/troubleshooting.md (a fused residual add on WebGL): the same ResNet50V2 graph, fused and unfused.
"""
from __future__ import annotations

import argparse

import numpy as np

from converter.formats import open_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--format", default="tfjs_graph")
    parser.add_argument("--backends", nargs=2, default=["tfjs-cpu", "browser-webgl"])
    parser.add_argument("--shape", nargs="+", type=int, default=[16, 32, 32, 3])
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=args.shape).astype(np.float32)
    outputs = []
    for backend in args.backends:
        with open_runtime(backend, args.format, args.artifact) as runtime:
            outputs.append(runtime.run([x])[0].astype(np.float64))
    a, b = outputs
    cosine = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"{args.backends[0]} vs {args.backends[1]}: max |diff| {np.abs(a - b).max():.3g}, cosine {cosine:.6f}")


if __name__ == "__main__":
    main()
