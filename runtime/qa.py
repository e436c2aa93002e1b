"""Extractive question answering post-processing: best spans across the context windows.

Mirrors transformers' question-answering pipeline (fast-tokenizer path): a span may only start and end
inside the context, start/end probabilities are softmaxed per window, spans longer than ``max_answer_len``
or ending before they start are dropped, and answers are aligned to whole words by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding

from onnxformer.errors import InputError


@dataclass(frozen=True)
class QAOptions:
    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    def check(self) -> QAOptions:
        for name in ("top_k", "max_answer_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, not {value!r}")
        return self


def window_defaults(model_limit: int, max_seq_len: int | None, doc_stride: int | None) -> tuple[int, int]:
    """The pipeline's defaults: windows of min(limit, 384) tokens overlapping by min(window // 2, 128)."""
    max_seq_len = min(model_limit, 384) if max_seq_len is None else max_seq_len
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or not 1 <= max_seq_len <= model_limit:
        raise InputError(f"max_seq_len must be an integer in [1, {model_limit}] (the model's limit), not {max_seq_len!r}")
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    if isinstance(doc_stride, bool) or not isinstance(doc_stride, int) or not 0 <= doc_stride < max_seq_len:
        raise InputError(f"doc_stride must be an integer in [0, {max_seq_len}), not {doc_stride!r}")
    return max_seq_len, doc_stride


def context_mask(enc: Encoding, cls_id: int | None) -> np.ndarray:
    """1 where a token may be part of the answer: context tokens, plus [CLS] (the 'no answer' slot)."""
    allowed = np.array([s == 1 for s in enc.sequence_ids], dtype=np.int64)
    if cls_id is not None:
        allowed[np.array(enc.ids) == cls_id] = 1
    return allowed


def window_candidates(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int,
                      max_answer_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(starts, ends, scores, null score) for one window; logits (T,) of its real tokens."""
    undesired = allowed == 0
    start = _softmax(np.where(undesired, -10000.0, start))
    end = _softmax(np.where(undesired, -10000.0, end))
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0  # the first token is never an answer
    outer = np.triu(np.outer(start, end))
    candidates = np.tril(outer, max_answer_len - 1)  # end >= start, at most max_answer_len tokens
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, top_k)[:top_k]
        order = part[np.argsort(-flat[part])]
    starts, ends = np.unravel_index(order, candidates.shape)
    # The pipeline tests membership against ``mask.nonzero()`` of a (1, T) mask, whose row indices (all 0)
    # let index 0 through as well; kept so top-k lists match it exactly (such spans score 0).
    ok = allowed.astype(bool).copy()
    ok[0] = True
    keep = ok[starts] & ok[ends]
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends], null


def char_span(enc: Encoding, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        start_word, end_word = enc.token_to_word(int(s)), enc.token_to_word(int(e))
        if start_word is not None and end_word is not None:
            start_chars = enc.word_to_chars(start_word, sequence_index=1)
            end_chars = enc.word_to_chars(end_word, sequence_index=1)
            if start_chars is not None and end_chars is not None:
                return start_chars[0], end_chars[1]
    return enc.offsets[int(s)][0], enc.offsets[int(e)][1]


def best_answers(context: str, windows: list[tuple[Encoding, np.ndarray, np.ndarray]], cls_id: int | None,
                 options: QAOptions) -> dict[str, Any] | list[dict[str, Any]]:
    """Answers over all windows (same text found twice: scores add up), best first."""
    answers: list[dict[str, Any]] = []
    null_score = 1_000_000.0
    pre_k = options.top_k * 2 + 10 if options.align_to_words else options.top_k  # word alignment merges some
    for enc, start, end in windows:
        starts, ends, scores, null = window_candidates(start, end, context_mask(enc, cls_id), pre_k,
                                                       options.max_answer_len)
        null_score = min(null_score, null)
        for s, e, score in zip(starts, ends, scores):
            lo, hi = char_span(enc, s, e, options.align_to_words)
            text = context[lo:hi]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += float(score)
            else:
                answers.append({"score": float(score), "start": lo, "end": hi, "answer": text})
    if options.handle_impossible_answer:
        answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda a: a["score"], reverse=True)[: options.top_k]
    return answers[0] if len(answers) == 1 else answers


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - x.max())
    return x / x.sum()
