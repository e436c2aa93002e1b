"""Token classification post-processing: word-level entity grouping with character offsets.

Mirrors transformers' token-classification pipeline (``aggregation_strategy`` none / simple / first /
average / max) so results match it token for token, using only the `tokenizers` encoding.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tokenizers import Encoding

from onnxformer.errors import InputError
from onnxformer.runtime.classification import softmax

AGGREGATIONS = ("none", "simple", "first", "average", "max")


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregation!r}; choose one of: {', '.join(AGGREGATIONS)}")
    return aggregation


def entities(text: str, enc: Encoding, logits: np.ndarray, labels: Sequence[str], tokenizer: Any,
             aggregation: str, ignore_labels: Sequence[str] = ("O",)) -> list[dict[str, Any]]:
    """logits (T, L) of one unpadded text → its entities."""
    pre = _pre_entities(text, enc, softmax(logits.astype(np.float32)), tokenizer)
    if aggregation in ("none", "simple"):
        tokens = [_token_entity(p, labels) for p in pre]
    else:
        tokens = [_word_entity(group, labels, tokenizer, aggregation) for group in _words(pre)]
    grouped = tokens if aggregation == "none" else _group(tokens, tokenizer)
    return [e for e in grouped if e.get("entity", e.get("entity_group")) not in ignore_labels]


def _pre_entities(text: str, enc: Encoding, scores: np.ndarray, tokenizer: Any) -> list[dict[str, Any]]:
    pre = []
    for idx, (token_id, token, special, (start, end)) in enumerate(
            zip(enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets)):
        if special:
            continue
        word_ref = text[start:end]
        if tokenizer.continuing_subword_prefix:  # word-aware tokenizer: a piece differs from its source text
            is_subword = len(token) != len(word_ref)
        else:  # the pipeline's fallback heuristic for tokenizers without word pieces
            is_subword = start > 0 and " " not in text[start - 1:start + 1]
        if token_id == tokenizer.unk_id:
            token, is_subword = word_ref, False
        pre.append({"word": token, "scores": scores[idx], "start": start, "end": end, "index": idx,
                    "is_subword": is_subword})
    return pre


def _token_entity(pre: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    best = int(pre["scores"].argmax())
    return {"entity": labels[best], "score": float(pre["scores"][best]), "index": pre["index"],
            "word": pre["word"], "start": pre["start"], "end": pre["end"]}


def _words(pre: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    for p in pre:
        if groups and p["is_subword"]:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _word_entity(group: list[dict[str, Any]], labels: Sequence[str], tokenizer: Any, aggregation: str) -> dict:
    if aggregation == "first":
        scores = group[0]["scores"]
    elif aggregation == "max":
        scores = max(group, key=lambda p: p["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([p["scores"] for p in group]), axis=0)
    best = int(scores.argmax())
    return {"entity": labels[best], "score": float(scores[best]),
            "word": tokenizer.tokens_to_string([p["word"] for p in group]),
            "start": group[0]["start"], "end": group[-1]["end"]}


def _tag(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label  # not in B-/I- form: a continuation


def _group(tokens: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Merge adjacent tokens/words of the same entity type (a B- tag starts a new entity)."""
    groups: list[list[dict[str, Any]]] = []
    for t in tokens:
        bi, tag = _tag(t["entity"])
        if groups and bi != "B" and _tag(groups[-1][-1]["entity"])[1] == tag:
            groups[-1].append(t)
        else:
            groups.append([t])
    return [{"entity_group": g[0]["entity"].split("-", 1)[-1],
             "score": float(np.nanmean([t["score"] for t in g])),
             "word": tokenizer.tokens_to_string([t["word"] for t in g]),
             "start": g[0]["start"], "end": g[-1]["end"]} for g in groups]
