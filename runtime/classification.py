"""Sequence classification post-processing: activation over the logits, labels by id2label, top-k."""
from __future__ import annotations

from typing import Any

import numpy as np

from onnxformer.artifact.manifest import Postprocess
from onnxformer.errors import ArtifactError, InputError


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))  # max-shift: no overflow on large logits
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activate(logits: np.ndarray, kind: str) -> np.ndarray:
    """Scores over the last axis: "softmax", "sigmoid" or "none" (the logits themselves)."""
    return softmax(logits) if kind == "softmax" else sigmoid(logits) if kind == "sigmoid" else logits


def activation(postprocess: Postprocess, num_labels: int) -> str:
    """The manifest's activation; a single-logit head is a sigmoid (as transformers' pipeline decides)."""
    name = postprocess.activation or ("sigmoid" if num_labels == 1 else "softmax")
    if name not in ("softmax", "sigmoid", "none"):
        raise ArtifactError(f"unknown activation {name!r} in the manifest; expected softmax, sigmoid or none")
    return "sigmoid" if num_labels == 1 and name == "softmax" else name


def label_names(postprocess: Postprocess, num_labels: int) -> list[str]:
    return [postprocess.label(i) for i in range(num_labels)]


def check_top_k(top_k: int | None, num_labels: int) -> int:
    if top_k is None:
        return num_labels
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be a positive integer or None (all labels), not {top_k!r}")
    return min(top_k, num_labels)


def top_labels(logits: np.ndarray, postprocess: Postprocess, top_k: int | None) -> list[list[dict[str, Any]]]:
    """logits (B, L) → per text, the ``top_k`` labels with scores, best first."""
    num_labels = logits.shape[-1]
    k = check_top_k(top_k, num_labels)
    scores = activate(logits, activation(postprocess, num_labels))
    names = label_names(postprocess, num_labels)
    results = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        results.append([{"label": names[i], "score": float(row[i])} for i in order])
    return results
