"""Inputs of sequence classifiers: single texts, or text pairs for cross-encoders (rerankers, NLI).

A pair is a ``(text, text_pair)`` tuple or transformers' pipeline dict ``{"text": ..., "text_pair": ...}``.
A dict passed alone is one pair — iterating it would silently classify its two keys.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

from onnxformer.errors import InputError

TextInput = Union[str, tuple[str, str], Mapping[str, str]]
_KEYS = {"text", "text_pair"}


def split(inputs: Sequence[TextInput] | TextInput) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): every input a text, or every input a pair."""
    if isinstance(inputs, (str, Mapping)):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or not inputs:
        raise InputError("pass a non-empty list of texts, (text, text_pair) tuples or {'text', 'text_pair'} dicts")
    items = [_pair(i, item) for i, item in enumerate(inputs)]
    singles = [b is None for _, b in items]
    if all(singles):
        return [a for a, _ in items], None
    if any(singles):
        raise InputError("mix of single texts and text pairs in one call; classify them in separate calls")
    return [a for a, _ in items], [b for _, b in items]  # type: ignore[misc]


def _pair(index: int, item: object) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, Mapping):
        if set(item) - _KEYS or "text" not in item:
            raise InputError(f"item {index}: a pair dict has the keys 'text' and 'text_pair' (got {sorted(item)})")
        second = item.get("text_pair")
        if second is None:
            return _text(index, item["text"]), None
        return _text(index, item["text"]), _text(index, second)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return _text(index, item[0]), _text(index, item[1])
    raise InputError(f"item {index} is {type(item).__name__}; pass a text, a (text, text_pair) tuple "
                     "or a {'text', 'text_pair'} dict")


def _text(index: int, value: object) -> str:
    if not isinstance(value, str):
        raise InputError(f"item {index}: {type(value).__name__} where a text was expected; pass strings")
    return value
