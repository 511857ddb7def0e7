"""The machine a benchmark ran on: CPU, the instruction-set extensions that matter for inference, memory, versions."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

from converter.versions import tool_versions

# /proc/cpuinfo flags that change which kernels XNNPACK, oneDNN, onnxruntime and wasm SIMD can use.
ISA_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni")
ISA_PREFIXES = ("amx",)


def fingerprint() -> dict[str, Any]:
    """{cpu_model, cores, isa_flags, memory_gb, os, python, node, versions}."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "isa_flags": sorted(f for f in flags if f in ISA_FLAGS or f.startswith(ISA_PREFIXES)),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": _node_version(),
        "versions": tool_versions(),
    }


def cpu_key() -> dict[str, Any]:
    """What makes a latency row belong to this machine: the CPU model and the core count."""
    cpu = _cpuinfo()
    return {"cpu_model": cpu.get("model name") or platform.processor() or platform.machine(), "cores": os.cpu_count()}


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty off Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    entries: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        entries[key.strip()] = value.strip()
    return entries


def _memory_gb() -> Optional[float]:
    try:
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if match:
            return round(int(match.group(1)) / 1024**2, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _node_version() -> Optional[str]:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
