"""The token loop shared by decoder-only and seq2seq generation: choose, force, stop per row, step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from onnxformer.runtime.generation.options import GenerationOptions
from onnxformer.runtime.generation.sampling import TokenScore, choose, scores


class Stepper(Protocol):
    """Runs the model: ``first`` gives the logits of the first new token, ``next`` feeds one token per row."""

    def first(self) -> np.ndarray: ...  # (B, V) float

    def next(self, tokens: np.ndarray) -> np.ndarray: ...  # tokens (B,) int64 → (B, V)


@dataclass(frozen=True)
class SpecialTokens:
    eos: tuple[int, ...]
    pad: int
    forced_bos: int | None = None  # seq2seq: the first generated token (mBART-style language codes)
    forced_eos: int | None = None  # the last token when max_new_tokens is reached (BART, Marian)


def token_loop(stepper: Stepper, history: np.ndarray, opts: GenerationOptions, special: SpecialTokens,
               finished: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, list[TokenScore] | None]]:
    """Yield (tokens (B,), active (B,) bool, per-row scores or None) per step; finished rows get the pad token.

    ``finished`` is shared with the caller, who may mark rows done between steps (stop sequences);
    ``history`` (B, T) holds the ids the repetition penalty counts as already seen (-1: none). Scores (each
    token's log-probability, ``opts.logprobs`` most likely tokens') come only when ``opts.logprobs`` is set.
    """
    rng = np.random.default_rng(opts.seed)
    eos = np.array(special.eos or (-1,), dtype=np.int64)
    logits = stepper.first()
    rows = np.arange(len(logits))
    seen = np.zeros(logits.shape, dtype=bool)
    counts = new_counts(logits.shape, opts)
    for row, ids in enumerate(history):
        seen[row, ids[ids >= 0]] = True
    for step in range(opts.max_new_tokens):
        forced = force_tokens(suppress_eos(logits, step, opts, special), step, opts.max_new_tokens, special)
        active = ~finished
        tokens = np.where(active, choose(forced, seen, opts, rng, counts), special.pad)
        seen[rows[active], tokens[active]] = True
        if counts is not None:
            counts[rows[active], tokens[active]] += 1
        if not opts.ignore_eos:
            finished |= np.isin(tokens, eos)
        yield tokens, active, scores(logits, tokens, opts.logprobs) if opts.logprobs is not None else None
        if finished.all() or step == opts.max_new_tokens - 1:
            return
        logits = stepper.next(tokens)


def new_counts(shape: tuple[int, ...], opts: GenerationOptions) -> np.ndarray | None:
    """How often each token was generated per row, (B, V) int32: only when a presence/frequency penalty needs it."""
    return np.zeros(shape, dtype=np.int32) if opts.presence_penalty or opts.frequency_penalty else None


def suppress_eos(logits: np.ndarray, step: int, opts: GenerationOptions, special: SpecialTokens) -> np.ndarray:
    """vLLM's ``min_tokens``: the end-of-sequence logits at -inf while fewer than ``min_tokens`` tokens were generated
    (``step`` of them), so the next best token is chosen. A token the model forces (``force_tokens``) still wins."""
    if step >= opts.min_tokens or not special.eos:
        return logits
    out = logits.copy()
    out[..., list(special.eos)] = -np.inf
    return out


def force_tokens(logits: np.ndarray, step: int, max_new: int, special: SpecialTokens) -> np.ndarray:
    """Logits (B, V) with only the forced token allowed where transformers forces one: bos at the first step,
    eos at the last (the solo loop and the continuous batch both call this)."""
    forced = special.forced_bos if step == 0 else None
    if step == max_new - 1 and special.forced_eos is not None:
        forced = special.forced_eos
    if forced is None:
        return logits
    out = np.full_like(logits, -np.inf)
    out[:, forced] = 0.0
    return out
