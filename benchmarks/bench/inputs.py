"""Benchmark inputs: texts that tokenize to exactly the requested length, and their (B, T) feeds.

The same texts feed every configuration, so model-only feeds, end-to-end requests and the fidelity
comparison all see identical tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxformer.errors import InputError
from onnxformer.runtime.tokenizer import TextTokenizer

# Common English words: one token each in BERT/RoBERTa-style vocabularies, so n words ≈ n tokens.
WORDS = (
    "the model runs on a small machine and the answer comes back fast when people ask about time "
    "water city music house school light river money game story paper world table green open great"
).split()


@dataclass(frozen=True)
class Inputs:
    batch: int
    seq: int
    texts: list[str]
    feeds: dict[str, np.ndarray]  # int64 (batch, seq)


def make_texts(tokenizer: TextTokenizer, batch: int, seq: int, seed: int = 0) -> list[str]:
    """``batch`` different texts, each tokenizing to ``seq`` tokens (special tokens included) where possible."""
    rng = np.random.default_rng(seed + 1000 * seq + batch)
    texts = []
    for _ in range(batch):
        words = list(rng.choice(WORDS, size=max(1, seq)))
        n = max(1, seq - 2)
        for _ in range(4):  # converge on the exact count; tokenizers add 2-4 special tokens
            count = tokenizer.count_tokens([" ".join(words[:n])])[0]
            if count == seq:
                break
            n = max(1, min(len(words), n + seq - count))
        texts.append(" ".join(words[:n]))
    return texts


def make_inputs(tokenizer: TextTokenizer, batch: int, seq: int, seed: int = 0) -> Inputs:
    if seq > tokenizer.max_length:
        raise InputError(f"--seq {seq} exceeds the model's limit of {tokenizer.max_length} tokens; use a shorter --seq")
    texts = make_texts(tokenizer, batch, seq, seed)
    feeds = tokenizer.encode(texts, truncate=True).feeds
    return Inputs(batch, seq, texts, {k: _fit(v, seq, tokenizer.pad_id if k == "input_ids" else 0) for k, v in feeds.items()})


def _fit(x: np.ndarray, seq: int, pad: int) -> np.ndarray:
    """Pad (or cut) the time axis to exactly ``seq`` so every configuration times the same shape."""
    if x.shape[1] >= seq:
        return np.ascontiguousarray(x[:, :seq])
    return np.pad(x, ((0, 0), (0, seq - x.shape[1])), constant_values=pad)
