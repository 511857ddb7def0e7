"""Per-channel uint8/uint16 kernels in a TF.js graph model, which stores one scale and minimum per weight.

After batch norms are folded into them, a convolution's output channels differ in range by up to 10x or more
(measured on MobileNet v1: pointwise kernels' channel RMS spans 2x to 14x), so one affine range per weight leaves the
small channels a few steps. Here a kernel W is stored as W' = W / s, each output channel scaled to [-1, 1] by s (its
largest |value|), and s (float32, one value per output channel) multiplies the convolution's output:

    act(conv(x, W) + b)  ->  act(conv(x, W') * s + b)

which is exact before quantization and needs only ops every TF.js backend has (the fused node is split into the
plain op, Mul, AddV2 and its activation; see tfjs.py `_unfuse`). The kernel's quantized error is then its
per-channel error: 3x to 9x smaller on those kernels. The cost is s's bytes and the unfused ops at run time.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

# op -> (plain op, number of trailing kernel dims that are its output channels)
KERNEL_OPS = {"_FusedConv2D": ("Conv2D", 1), "FusedDepthwiseConv2dNative": ("DepthwiseConv2dNative", 2),
              "_FusedMatMul": ("MatMul", 1), "Conv2D": ("Conv2D", 1), "DepthwiseConv2dNative": ("DepthwiseConv2dNative", 2),
              "MatMul": ("MatMul", 1)}
SCALE_SUFFIX = "/channel_scale"


def _nodes(content: dict[str, Any]) -> list[dict[str, Any]]:
    return content["modelTopology"].get("node", [])


def fused_ops(node: dict[str, Any]) -> list[str]:
    return [base64.b64decode(v).decode() for v in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])]


def kernels(content: dict[str, Any]) -> dict[str, int]:
    """Weights that can be stored per channel -> their number of trailing output-channel dims: the filter of one
    convolution or matmul (not shared, not transposed), whose fused ops, if any, start with the bias."""
    consumers: dict[str, int] = {}
    for node in _nodes(content):
        for name in node.get("input", []):
            consumers[name] = consumers.get(name, 0) + 1
    shapes = {w["name"]: w["shape"] for group in content["weightsManifest"] for w in group["weights"]
              if w.get("dtype", "float32") == "float32"}
    found: dict[str, int] = {}
    for node in _nodes(content):
        kind = KERNEL_OPS.get(node.get("op"))
        inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        if kind is None or len(inputs) < 2 or inputs[1] not in shapes or consumers.get(inputs[1]) != 1:
            continue
        attrs = node.get("attr", {})
        if any(attrs.get(key, {}).get("b") for key in ("transpose_a", "transpose_b")):
            continue
        fused = fused_ops(node)
        if node["op"].startswith(("_Fused", "Fused")) and (not fused or fused[0] != "BiasAdd" or len(inputs) < 3):
            continue
        if len(shapes[inputs[1]]) >= kind[1] + 1:
            found[inputs[1]] = kind[1]
    return found


def scales(values: np.ndarray, trailing: int) -> np.ndarray:
    """s: the largest |value| of each output channel (1 where a channel is all zeros), flattened."""
    channels = values.reshape(-1, int(np.prod(values.shape[-trailing:])))
    largest = np.abs(channels).max(axis=0)
    return np.where(largest > 0, largest, 1.0).astype(np.float32)


def split(values: np.ndarray, trailing: int) -> tuple[np.ndarray, np.ndarray]:
    """(W', s) with W = W' * s over the output channels."""
    s = scales(values, trailing)
    flat = values.reshape(-1, s.size) / s
    return flat.reshape(values.shape).astype(np.float32), s


def stored(values: np.ndarray, dtype: str, trailing: int, method: str = "minmax") -> np.ndarray:
    """The kernel as the artifact restores it: W' stored at `dtype`, times s (float64)."""
    from converter.exports.tfjs_ranges import stored as stored_tensor

    scaled, s = split(np.asarray(values, dtype=np.float32), trailing)
    restored = stored_tensor(scaled, dtype, method).reshape(-1, s.size) * s.astype(np.float64)
    return restored.reshape(values.shape)


def read_groups(folder: Path, manifest: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """An unquantized artifact's weight groups with their data ({'name', 'data'} each, in manifest order), as
    tensorflowjs's write_weights takes them."""
    groups = []
    for group in manifest:
        blob = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset, entries = 0, []
        for weight in group["weights"]:
            if "quantization" in weight:
                raise ValueError(f"{folder}: weight {weight['name']} is already quantized")
            dtype = np.dtype(weight["dtype"] if weight["dtype"] != "bool" else np.bool_)
            count = int(np.prod(weight["shape"], dtype=np.int64))
            data = np.frombuffer(blob, dtype, count, offset).reshape(weight["shape"])
            offset += count * dtype.itemsize
            entries.append({"name": weight["name"], "data": data.copy()})
        groups.append(entries)
    return groups


def exact_glob(name: str) -> str:
    """A weight name as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _rewire(content: dict[str, Any], kernel: str, channels: int) -> None:
    """Multiply the kernel's node's convolution output by the kernel's channel scale (a Const of `channels`
    values), before the bias."""
    from converter.exports.tfjs import _unfuse

    nodes = _nodes(content)
    node = next(n for n in nodes if kernel in n.get("input", [])[1:2])
    scale = kernel + SCALE_SUFFIX
    dtype = node.get("attr", {}).get("T", {"type": "DT_FLOAT"})
    name = node["name"]
    const = {"name": scale, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {
        "dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": str(channels)}]}}}}}
    if node["op"] in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
        node["name"] = f"{name}/per_channel_{node['op']}"
        mul = {"name": name, "op": "Mul", "input": [node["name"], scale], "attr": {"T": dtype}}
    else:
        data = [i for i in node["input"] if not i.startswith("^")]
        control = [i for i in node["input"] if i.startswith("^")]
        plain = KERNEL_OPS[node["op"]][0]
        _unfuse(nodes, node, plain, data, control, fused_ops(node)[1:])
        bias = next(n for n in nodes if n.get("op") == "AddV2" and n.get("input", [None])[0] == node["name"])
        mul = {"name": f"{name}/per_channel_scale", "op": "Mul", "input": [node["name"], scale], "attr": {"T": dtype}}
        bias["input"][0] = mul["name"]
    index = nodes.index(node)
    nodes[index + 1:index + 1] = [const, mul]


def chosen(content: dict[str, Any], dtypes: dict[str, str], per_channel: list[str]) -> dict[str, int]:
    """The kernels `per_channel` (globs) names that can be stored per channel and that `dtypes` (weight -> dtype)
    stores as uint8/uint16 -> their number of trailing output-channel dims."""
    import fnmatch

    candidates = kernels(content)
    names = [w["name"] for group in content["weightsManifest"] for w in group["weights"]]
    matched = {n for pattern in per_channel for n in fnmatch.filter(names, pattern)}
    return {n: candidates[n] for n in names if n in matched and n in candidates and dtypes.get(n) in ("uint8", "uint16")}


def restored(values: np.ndarray, dtype: str, trailing: int, method: str) -> np.ndarray:
    """A weight as the artifact `apply` writes restores it (float64): per channel when `trailing`, else one range."""
    from converter.exports.tfjs_ranges import stored as stored_tensor

    return stored(values, dtype, trailing, method) if trailing else stored_tensor(values, dtype, method)


def apply(out_dir: Path, dtypes: dict[str, str], per_channel: list[str], shard_size: int,
          shifts: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Rewrite the float graph model in out_dir: `shifts` (weight -> what to subtract: bias corrections) are
    subtracted first; the kernels matched by `per_channel` that `dtypes` (weight -> uint8, uint16 or float16)
    stores as uint8/uint16 are split into W' and s; then every weight in `dtypes` is quantized and the shards
    rewritten (s stays float32). Returns what was done, for the export's details."""
    from tensorflowjs import write_weights

    path = out_dir / "model.json"
    content = json.loads(path.read_text())
    split_here = chosen(content, dtypes, per_channel)
    groups = read_groups(out_dir, content["weightsManifest"])
    for group in groups:
        for entry in [e for e in group if e["name"] in (shifts or {})]:
            entry["data"] = (entry["data"].astype(np.float64) - shifts[entry["name"]]).astype(np.float32)
        for entry in [e for e in group if e["name"] in split_here]:
            entry["data"], s = split(entry["data"], split_here[entry["name"]])
            position = next(i for i, e in enumerate(group) if e is entry)
            group.insert(position + 1, {"name": entry["name"] + SCALE_SUFFIX, "data": s})
            _rewire(content, entry["name"], s.size)
    for group in content["weightsManifest"]:
        for old in group["paths"]:
            (out_dir / old).unlink()
    by_dtype: dict[str, list[str]] = {}
    for name, dtype in dtypes.items():
        by_dtype.setdefault(dtype, []).append(exact_glob(name))
    content["weightsManifest"] = write_weights.write_weights(groups, str(out_dir), shard_size_bytes=shard_size,
                                                             write_manifest=False,
                                                             quantization_dtype_map=by_dtype or None)
    path.write_text(json.dumps(content))
    return {"per_channel": len(split_here)}
