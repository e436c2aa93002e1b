"""Next-token choice from logits: logit bias → repetition penalty → presence/frequency penalties → temperature →
top-k → top-p → sample (or argmax); and the log-probabilities a caller may ask for.

The repetition penalty, temperature, top-k and top-p follow transformers' logits processors, so settings mean the
same thing; the logit bias and the presence/frequency penalties follow OpenAI's definitions (the penalties count
the generated tokens only). Each is skipped at its neutral value, so neutral settings leave greedy decoding
identical to transformers'. The random stream is numpy's (seeded), so sampled text is reproducible here, not
identical to PyTorch's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxformer.errors import InputError
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


def bias(logits: np.ndarray, opts: GenerationOptions) -> np.ndarray:
    """OpenAI's ``logit_bias``: each listed token's bias added to its logit (ids past the logits: an error)."""
    if not opts.logit_bias:
        return logits
    ids = np.array([t for t, _ in opts.logit_bias], dtype=np.int64)
    if ids.max() >= logits.shape[-1]:
        raise InputError(f"logit_bias names token {int(ids.max())}; this model's logits cover {logits.shape[-1]}")
    out = logits.copy()
    out[:, ids] += np.array([b for _, b in opts.logit_bias], dtype=np.float32)
    return out


def penalize_counts(logits: np.ndarray, counts: np.ndarray | None, opts: GenerationOptions) -> np.ndarray:
    """OpenAI's penalties: ``logits[t] -= presence * (count[t] > 0) + frequency * count[t]`` (``counts``: (B, V),
    how often each token was generated so far)."""
    if counts is None or (opts.presence_penalty == 0 and opts.frequency_penalty == 0):
        return logits
    return logits - (opts.presence_penalty * (counts > 0) + opts.frequency_penalty * counts).astype(np.float32)


def choose(logits: np.ndarray, seen: np.ndarray, opts: GenerationOptions, rng: np.random.Generator,
           counts: np.ndarray | None = None) -> np.ndarray:
    """One token id per row (int64 (B,)) from last-position logits (B, V); ``counts`` (B, V): the tokens generated so
    far, for the presence and frequency penalties."""
    logits = bias(logits.astype(np.float32, copy=False), opts)
    logits = penalize_counts(penalize(logits, seen, opts.repetition_penalty), counts, opts)
    if not opts.do_sample:
        return logits.argmax(axis=-1).astype(np.int64)
    logits = top_p_filter(top_k_filter(logits / opts.temperature, opts.top_k), opts.top_p)
    cdf = np.cumsum(softmax(logits), axis=-1)
    draws = rng.random(len(logits))[:, None] * cdf[:, -1:]
    return np.minimum((cdf < draws).sum(axis=-1), logits.shape[-1] - 1).astype(np.int64)


@dataclass(frozen=True)
class TokenScore:
    """One generated token's log-probability and the ``k`` most likely tokens' at its step (OpenAI's logprobs)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def scores(logits: np.ndarray, tokens: np.ndarray, k: int) -> list[TokenScore]:
    """Per row: the chosen token's log-probability under the model's own distribution (the raw logits, before any
    penalty, bias, temperature or filter: vLLM's default) and the ``k`` most likely tokens', best first."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    k = min(k, logits.shape[-1])
    top = np.argsort(-logp, axis=-1, kind="stable")[:, :k]
    return [TokenScore(int(t), float(row[t]), tuple((int(i), float(row[i])) for i in best))
            for row, t, best in zip(logp, tokens, top)]
