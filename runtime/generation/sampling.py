"""Next-token choice from logits: repetition penalty → temperature → top-k → top-p → sample (or argmax).

The order and the semantics follow transformers' logits processors, so settings mean the same thing;
the random stream is numpy's (seeded), so sampled text is reproducible here, not identical to PyTorch's.
"""
from __future__ import annotations

import numpy as np

from onnxformer.runtime.generation.options import GenerationOptions


def penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """Make already-seen tokens (``seen``: bool (B, V)) less likely."""
    if penalty == 1.0:
        return logits
    hit = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, hit, logits)


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability mass reaches ``p`` (at least one)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranked = np.take_along_axis(logits, order, axis=-1)
    probs = softmax(ranked)
    drop_ranked = np.cumsum(probs, axis=-1) - probs > p  # mass *before* a token already exceeds p
    drop = np.zeros_like(drop_ranked)
    np.put_along_axis(drop, order, drop_ranked, axis=-1)
    return np.where(drop, -np.inf, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def choose(logits: np.ndarray, seen: np.ndarray, opts: GenerationOptions, rng: np.random.Generator) -> np.ndarray:
    """One token id per row (int64 (B,)) from last-position logits (B, V)."""
    logits = penalize(logits.astype(np.float32, copy=False), seen, opts.repetition_penalty)
    if not opts.do_sample:
        return logits.argmax(axis=-1).astype(np.int64)
    logits = top_p_filter(top_k_filter(logits / opts.temperature, opts.top_k), opts.top_p)
    cdf = np.cumsum(softmax(logits), axis=-1)
    draws = rng.random(len(logits))[:, None] * cdf[:, -1:]
    return np.minimum((cdf < draws).sum(axis=-1), logits.shape[-1] - 1).astype(np.int64)
