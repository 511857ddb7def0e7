"""Declared preprocessing: resize (direct or shorter-side + centre crop), channels, scale, mean, std, dtype."""
from __future__ import annotations

import numpy as np
from PIL import Image

from converter.recipe.schema import Preprocess


def resize_image(image: Image.Image, spec: Preprocess) -> Image.Image:
    """Resize a PIL image as the spec says (no-op without `resize`)."""
    if spec.resize is None:
        return image
    height, width = spec.resize
    if spec.resize_mode == "direct":
        return image.resize((width, height), Image.BILINEAR)
    shorter = spec.crop_from or int(round(max(height, width) / 0.875))
    scale = shorter / min(image.size)
    resized = image.resize((max(width, round(image.size[0] * scale)), max(height, round(image.size[1] * scale))), Image.BILINEAR)
    left = (resized.size[0] - width) // 2
    top = (resized.size[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


def resize_array(sample: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Resize one (H, W) or (H, W, C) numeric array channel by channel, keeping its values' range."""
    if spec.resize is None:
        return sample.astype(np.float32)
    planes = sample[..., None] if sample.ndim == 2 else sample
    out = [np.asarray(resize_image(Image.fromarray(planes[..., c].astype(np.float32), mode="F"), spec))
           for c in range(planes.shape[-1])]
    stacked = np.stack(out, axis=-1)
    return stacked[..., 0] if sample.ndim == 2 else stacked


def finish(batch: np.ndarray, spec: Preprocess, image_like: bool) -> np.ndarray:
    """Channels, scale, mean, std and dtype on a resized float batch (N, H, W[, C]) or (N, F)."""
    x = batch.astype(np.float32)
    if image_like:
        if x.ndim == 3:
            x = x[..., None]
        if spec.channels in ("rgb", "bgr") and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif spec.channels == "gray" and x.shape[-1] == 3:
            x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            x = x[..., None]
        if spec.channels == "bgr" and x.shape[-1] == 3:
            x = x[..., ::-1]
    x = x * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.dtype == "uint8":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if spec.dtype == "int8":
        return np.clip(np.rint(x), -128, 127).astype(np.int8)
    return np.ascontiguousarray(x, dtype=np.float32)
