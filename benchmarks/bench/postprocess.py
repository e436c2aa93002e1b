"""Post-processing that an end-to-end request pays, and the per-row vectors fidelity is measured on."""
from __future__ import annotations

import numpy as np

from onnxformer.artifact.manifest import Postprocess
from onnxformer.artifact.tasks import get_task
from onnxformer.runtime.classification import activate
from onnxformer.runtime.pooling import l2_normalize, pool


def pooled(task: str) -> bool:
    """Whether the task's output is a pooled embedding (``embed``); every other benchmarked task yields logits."""
    return get_task(task).method == "embed"


def finish(outputs: dict[str, np.ndarray], mask: np.ndarray, task: str, post: Postprocess) -> np.ndarray:
    """What a user gets back: pooled (normalised) embeddings, or class probabilities."""
    if pooled(task):
        embeddings = pool(outputs["last_hidden_state"].astype(np.float32), mask, post.pooling or "mean")
        return l2_normalize(embeddings) if post.normalize else embeddings
    # One probability array per output; QA start/end logits (B, T) normalise over T, which is also their last axis.
    probs = [activate(outputs[k].astype(np.float32), post.activation or "softmax") for k in sorted(outputs)]
    return probs[0] if len(probs) == 1 else np.stack(probs, axis=-1)


def signature(outputs: dict[str, np.ndarray], mask: np.ndarray, task: str, post: Postprocess) -> np.ndarray:
    """(B, D) per-row vectors compared by cosine: pooled embeddings, or the row's logits flattened."""
    if pooled(task):
        return pool(outputs["last_hidden_state"].astype(np.float64), mask, post.pooling or "mean")
    rows = [outputs[k].astype(np.float64).reshape(mask.shape[0], -1) for k in sorted(outputs)]
    return np.concatenate(rows, axis=1)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Worst row's cosine similarity between two (B, D) arrays."""
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((num / np.clip(den, 1e-30, None)).min())
