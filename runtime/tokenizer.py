"""Tokenization with the `tokenizers` library alone, configured from the manifest."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from onnxformer.errors import InputError


@dataclass
class Batch:
    feeds: dict[str, np.ndarray]  # ONNX inputs, int64, (B, T)
    encodings: list[Encoding]  # per text: tokens, offsets, word ids


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` with the padding/truncation rules recorded at export."""

    def __init__(self, path: Path, spec: dict[str, Any], input_names: Sequence[str]):
        self.max_length = int(spec["max_length"])
        self.pad_id = int(spec["pad_id"])
        self.input_names = list(input_names)
        # Two instances, never reconfigured after construction, so one tokenizer is safe to share across
        # threads: the strict one measures true lengths; the truncating one cuts (keeping [SEP]/</s>).
        self._strict = Tokenizer.from_file(str(path))
        self._strict.no_truncation()
        self._strict.no_padding()
        self._cutting = Tokenizer.from_file(str(path))
        self._cutting.no_padding()
        self._cutting.enable_truncation(self.max_length, strategy="longest_first")

    def encode(self, texts: Sequence[str], truncate: bool = False, pair: Sequence[str] | None = None) -> Batch:
        check_texts(texts)
        inputs = list(zip(texts, pair)) if pair is not None else list(texts)
        encodings = self._strict.encode_batch(inputs)
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > self.max_length]
        if too_long and not truncate:
            i = too_long[0]
            raise InputError(
                f"text {i} has {len(encodings[i].ids)} tokens, over the model's limit of {self.max_length}; "
                "shorten it or pass truncate=True"
            )
        for i in too_long:
            encodings[i] = self._cutting.encode(*inputs[i]) if pair is not None else self._cutting.encode(inputs[i])
        return Batch(self._pad(encodings), encodings)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._strict.encode_batch(list(texts))]

    def _pad(self, encodings: list[Encoding]) -> dict[str, np.ndarray]:
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: available[name] for name in self.input_names}


def check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InputError("pass a list of strings, not a single string (wrap it: [text])")
    if len(texts) == 0:
        raise InputError("got an empty list of texts; pass at least one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"item {i} is {type(text).__name__}, not str; pass strings only")
        if not text.strip():
            raise InputError(f"item {i} is an empty string; drop it or pass real text")
