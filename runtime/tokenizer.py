"""Tokenization with the `tokenizers` library alone, configured from the manifest."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from onnxformer.artifact.manifest import TokenizerSpec
from onnxformer.errors import ArtifactError, InputError


@dataclass
class Batch:
    feeds: dict[str, np.ndarray]  # ONNX inputs, int64, (B, T)
    encodings: list[Encoding]  # per text: tokens, offsets, word ids


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` with the padding/truncation rules recorded at export."""

    def __init__(self, path: Path, spec: TokenizerSpec, input_names: Sequence[str]):
        self.max_length = spec.max_length
        self.pad_id = spec.pad_id
        self.input_names = list(input_names)
        # Two instances, never reconfigured after construction, so one tokenizer is safe to share across
        # threads: the strict one measures true lengths; the truncating one cuts (keeping [SEP]/</s>).
        self._strict = _load(path)
        self._strict.no_truncation()
        self._strict.no_padding()
        self._cutting = _load(path)
        self._cutting.no_padding()
        self._cutting.enable_truncation(self.max_length, strategy="longest_first")
        self._json = self._strict.to_str()
        self._spans: dict[tuple[int, int], Tokenizer] = {}  # (max_length, stride) → overflowing QA tokenizer
        self._lock = threading.Lock()
        model = self._strict.model
        self.continuing_subword_prefix: str | None = getattr(model, "continuing_subword_prefix", None) or None
        unk = getattr(model, "unk_token", None)
        self.unk_id: int | None = self._strict.token_to_id(unk) if unk else None
        self.cls_id: int | None = self._cls_id(path)

    def _cls_id(self, path: Path) -> int | None:
        """The [CLS]/<s> id (QA keeps it answerable as the 'no answer' slot): from tokenizer_config.json when
        exported with one, else the usual spellings."""
        config = path.parent / "tokenizer_config.json"
        names = ["[CLS]", "<s>"]
        if config.is_file():
            try:
                token = json.loads(config.read_text(encoding="utf-8")).get("cls_token")
            except (ValueError, AttributeError, UnicodeDecodeError) as e:
                raise ArtifactError(f"{config} is not a JSON object ({type(e).__name__}); re-export the "
                                    "artifact or restore the file") from None
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str):
                names.insert(0, token)
        ids = [self._strict.token_to_id(n) for n in names]
        return next((i for i in ids if i is not None), None)

    @property
    def vocab_size(self) -> int:
        return self._strict.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str], truncate: bool = False, pair: Sequence[str] | None = None) -> Batch:
        encodings = self.encodings(texts, truncate=truncate, pair=pair)
        return Batch(self._pad(encodings), encodings)

    def encodings(self, texts: Sequence[str], truncate: bool = False, pair: Sequence[str] | None = None) -> list[Encoding]:
        """One encoding per text (no padding). Over-long text is an error unless ``truncate``: all texts are
        checked before any is run, so a bad item never leaves partial results."""
        check_texts(texts)
        if pair is not None:
            check_texts(pair)
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
        return encodings

    def pad(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """ONNX feeds (B, T) for ``encodings``, right-padded to the longest."""
        return self._pad(list(encodings))

    def spans(self, question: str, context: str, max_length: int, stride: int) -> list[Encoding]:
        """Question + context, the context cut into overlapping windows (``stride`` tokens shared), as
        transformers' question-answering pipeline does with ``truncation="only_second"``."""
        try:
            first = self._span_tokenizer(max_length, stride).encode(question, context)
        except Exception as e:  # tokenizers raises a bare Exception when the question leaves no room
            raise InputError(f"cannot fit the question into {max_length} tokens with a stride of {stride} "
                             f"({e}); shorten the question or raise max_seq_len") from None
        return [first, *first.overflowing]

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join word pieces back into text the way the tokenizer's decoder does (transformers'
        ``convert_tokens_to_string`` for fast tokenizers)."""
        decoder = self._strict.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def _span_tokenizer(self, max_length: int, stride: int) -> Tokenizer:
        # Truncation settings live on the Tokenizer object, so each (length, stride) gets its own, built once.
        with self._lock:
            tok = self._spans.get((max_length, stride))
            if tok is None:
                tok = Tokenizer.from_str(self._json)
                tok.no_padding()
                tok.enable_truncation(max_length, stride=stride, strategy="only_second")
                self._spans[(max_length, stride)] = tok
            return tok

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


def _load(path: Path) -> Tokenizer:
    """The tokenizer file, or one line saying it is unusable (tokenizers raises a bare Exception)."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; re-export the artifact or restore the file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ArtifactError(f"{path} is not a usable tokenizer ({reason}); re-export the artifact or "
                            "restore the file") from None


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


def check_token_ids(rows: Sequence[Sequence[int]], vocab: int) -> list[list[int]]:
    """Token-id inputs (OpenAI's ``[[101, 2023, 102]]``) as the model's own ids, used as given (no special tokens
    added): each row non-empty, each id an integer in the model's vocabulary (``0 .. vocab - 1``)."""
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise InputError(f"token-id input {i} is {type(row).__name__}; pass a list of token ids")
        if not len(row):
            raise InputError(f"token-id input {i} is empty; pass at least one token id")
        for j, token in enumerate(row):
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < vocab:
                raise InputError(f"token-id input {i}, position {j}: {token!r} is not a token id of this model "
                                 f"(its vocabulary is 0..{vocab - 1}); token ids are the model's own, from its "
                                 "tokenizer (not tiktoken's)")
        out.append([int(t) for t in row])
    return out


@dataclass(frozen=True)
class IdsEncoding:
    """Token ids given by the caller, in the shape of a ``tokenizers.Encoding`` (what padding reads)."""

    ids: list[int]

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.ids)

    @property
    def type_ids(self) -> list[int]:
        return [0] * len(self.ids)
