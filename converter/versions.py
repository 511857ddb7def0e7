"""Versions of the tools that made and checked the artifacts, read without importing them."""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("convert", "tensorflow", "tf-keras", "tensorflowjs", "tensorflow-model-optimization", "tf2onnx",
            "onnx", "onnxruntime", "ai-edge-litert", "numpy")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        versions[name] = package_version(name)
    package = Path(__file__).parent / "runtimes" / "js" / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
    if package.exists():
        versions["@tensorflow/tfjs"] = json.loads(package.read_text())["version"]
    return versions
