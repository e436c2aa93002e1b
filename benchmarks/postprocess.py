"""Post-processing that an end-to-end request pays, and the per-row vectors fidelity is measured on."""
from __future__ import annotations

from typing import Any

import numpy as np

from onnxformer.runtime.pooling import l2_normalize, pool


def finish(outputs: dict[str, np.ndarray], mask: np.ndarray, task: str, post: dict[str, Any]) -> np.ndarray:
    """What a user gets back: pooled (normalised) embeddings, or class probabilities."""
    if task == "feature-extraction":
        pooled = pool(outputs["last_hidden_state"].astype(np.float32), mask, post.get("pooling", "mean"))
        return l2_normalize(pooled) if post.get("normalize") else pooled
    # One probability array per output; QA start/end logits (B, T) normalise over T, which is also their last axis.
    probs = [_activate(outputs[k].astype(np.float32), post.get("activation", "softmax")) for k in sorted(outputs)]
    return probs[0] if len(probs) == 1 else np.stack(probs, axis=-1)


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def signature(outputs: dict[str, np.ndarray], mask: np.ndarray, task: str, post: dict[str, Any]) -> np.ndarray:
    """(B, D) per-row vectors compared by cosine: pooled embeddings, or the row's logits flattened."""
    if task == "feature-extraction":
        return pool(outputs["last_hidden_state"].astype(np.float64), mask, post.get("pooling", "mean"))
    rows = [outputs[k].astype(np.float64).reshape(mask.shape[0], -1) for k in sorted(outputs)]
    return np.concatenate(rows, axis=1)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Worst row's cosine similarity between two (B, D) arrays."""
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((num / np.clip(den, 1e-30, None)).min())
