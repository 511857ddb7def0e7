"""Accuracy against labels and agreement with the reference model's outputs."""
from __future__ import annotations

from typing import Optional

import numpy as np


def is_classifier(output: np.ndarray, labels: Optional[np.ndarray]) -> bool:
    """Class scores: a (N, C) output with C > 1 and, where labels exist, integer labels below C."""
    if output.ndim != 2 or output.shape[1] < 2:
        return False
    if labels is None:
        return True
    return np.issubdtype(labels.dtype, np.integer) and labels.ndim == 1 and int(labels.max(initial=0)) < output.shape[1]


def topk_accuracy(output: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among the k largest scores. Ties (common in int8 outputs) go to the lower
    class index, as np.argmax breaks them, so the same outputs always give the same figure."""
    k = min(k, output.shape[1])
    top = np.argsort(-output, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def check_labels(output: np.ndarray, labels: Optional[np.ndarray], where: str = "data.eval") -> None:
    """DataError when the labels cannot belong to this output: class labels beyond its classes, or targets whose
    size differs from the output's."""
    from converter.errors import DataError

    if labels is None:
        return
    if len(labels) != len(output):
        raise DataError(f"{where}: {len(labels)} labels for {len(output)} outputs")
    integer_classes = np.issubdtype(labels.dtype, np.integer) and labels.ndim == 1
    if integer_classes and output.ndim == 2 and output.shape[1] > 1:
        low, high = int(labels.min(initial=0)), int(labels.max(initial=0))
        if low < 0 or high >= output.shape[1]:
            raise DataError(f"{where}: class labels range {low}..{high}, but the model's output has "
                            f"{output.shape[1]} classes (0..{output.shape[1] - 1}): the labels belong to another "
                            "output (set verify.primary_output) or another class list")
        return
    if labels.size != output.size:
        raise DataError(f"{where}: labels of shape {list(labels.shape)} cannot be targets of an output of shape "
                        f"{list(output.shape)}: give one target per output value, or integer class labels for a "
                        "class-score output (verify.primary_output picks the output they belong to)")


def label_metrics(output: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, float]:
    """top1/top5 for class scores, mse/mae for anything else; empty without labels."""
    if labels is None:
        return {}
    check_labels(output, labels)
    if is_classifier(output, labels):
        return {"top1": topk_accuracy(output, labels, 1), "top5": topk_accuracy(output, labels, 5)}
    target = labels.reshape(output.shape).astype(np.float64)
    diff = output.astype(np.float64) - target
    return {"mse": float(np.mean(diff**2)), "mae": float(np.mean(np.abs(diff)))}


SNR_CAP_DB = 200.0  # identical outputs report this instead of infinity, so report.json stays plain JSON


def snr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return SNR_CAP_DB
    if signal == 0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, max(-SNR_CAP_DB, 10 * np.log10(signal / noise))))


def reference_metrics(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely an artifact's output follows the reference output on the same inputs."""
    out = output.astype(np.float64).reshape(len(output), -1)
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    diff = out - ref
    signal = float(np.sum(ref**2))
    noise = float(np.sum(diff**2))
    out_norm, ref_norm = np.linalg.norm(out, axis=1), np.linalg.norm(ref, axis=1)
    norms = out_norm * ref_norm
    # two zero vectors agree (1); a zero output against a non-zero reference, or the reverse, does not (0)
    both_zero = np.where((out_norm == 0) & (ref_norm == 0), 1.0, 0.0)
    cosines = np.where(norms > 0, np.sum(out * ref, axis=1) / np.where(norms > 0, norms, 1), both_zero)
    metrics = {
        "max_abs_diff": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "mean_abs_diff": float(np.mean(np.abs(diff))) if diff.size else 0.0,
        "cosine": float(np.mean(cosines)),
        "snr_db": snr_db(signal, noise),
    }
    if output.ndim == 2 and output.shape[1] > 1:
        metrics["top1_agreement"] = float(np.mean(np.argmax(output, axis=1) == np.argmax(reference, axis=1)))
    return metrics


def compare(output: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray],
            reference_labels: Optional[dict[str, float]] = None) -> dict[str, float]:
    """All metrics of one artifact output; `reference_labels` are the reference's own label metrics."""
    metrics = {**label_metrics(output, labels), **reference_metrics(output, reference)}
    if reference_labels and "top1" in metrics and "top1" in reference_labels:
        metrics["top1_drop"] = reference_labels["top1"] - metrics["top1"]
    return metrics


def compare_outputs(outputs: dict[str, np.ndarray], references: dict[str, np.ndarray], labels: Optional[np.ndarray],
                    primary: str) -> dict[str, object]:
    """Metrics of the primary output (with the labels) at the top level, and, for a model with several outputs,
    every output's under `outputs` ({name: metrics}; the others are compared with the reference only)."""
    headline = compare(outputs[primary], references[primary], labels)
    if len(outputs) == 1:
        return dict(headline)
    return {**headline, "outputs": {name: headline if name == primary else reference_metrics(out, references[name])
                                    for name, out in outputs.items()}}


def per_sample(output: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, object]:
    """Per-sample outcomes for paired statistics, in evaluation order, packed (converter.stats): `correct` (top-1
    equals the label) and `agree` (top-1 equals the reference's); empty for outputs that are not class scores."""
    from converter.stats import encode_per_sample

    if not is_classifier(output, labels) or labels is None:
        return {}
    top1 = np.argmax(output, axis=1)
    return {**encode_per_sample(top1 == labels), "agree": encode_per_sample(top1 == np.argmax(reference, axis=1))["correct"]}
