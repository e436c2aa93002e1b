"""Text in and out of generation: prompts → padded id batches, generated ids → text (incrementally), stops."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Tokenizer

from onnxformer.errors import InputError, InputKind
from onnxformer.runtime.tokenizer import check_texts, check_token_ids


@dataclass
class Prompts:
    ids: np.ndarray  # int64 (B, W), padded on ``side``
    mask: np.ndarray  # int64 (B, W), 1 on real tokens
    lengths: list[int]


class PromptEncoder:
    """Tokenizes prompts; too-long prompts fail unless ``truncate``, which keeps the end (decoders) or start."""

    def __init__(self, path: Path, pad_id: int, side: str):
        self.pad_id, self.side = pad_id, side
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # A decoder continues the end of its prompt, so cutting keeps the end; an encoder keeps the start.
        self._cut_direction = "left" if side == "left" else "right"

    def encode(self, prompts: Sequence[str | Sequence[int]], limit: int, truncate: bool, what: str,
               vocab: int | None = None) -> Prompts:
        """Texts are tokenized; a list of ints is a prompt already tokenized (the model's own ids, checked against
        ``vocab``, used as given)."""
        texts = [p for p in prompts if isinstance(p, str)]
        if texts or not prompts:
            check_texts(texts)  # an empty list is refused here too
        tokenized = iter([e.ids for e in self.tokenizer.encode_batch(texts)] if texts else [])
        vocab = vocab or self.tokenizer.get_vocab_size(with_added_tokens=True)
        rows = [next(tokenized) if isinstance(p, str) else check_token_ids([p], vocab)[0] for p in prompts]
        for i, ids in enumerate(rows):
            if not ids:
                raise InputError(f"prompt {i} encodes to no tokens; pass real text")
            if len(ids) > limit:
                if not truncate:
                    raise InputError(f"prompt {i} has {len(ids)} tokens, over the {limit} {what}; "
                                     "shorten it, lower max_new_tokens, or pass truncate=True", InputKind.TOO_LONG)
                prompt = prompts[i]
                rows[i] = self._cut(prompt, limit) if isinstance(prompt, str) else self._cut_ids(ids, limit)
        return self._pad(rows)

    def _cut(self, prompt: str, limit: int) -> list[int]:
        cutter = Tokenizer.from_str(self.tokenizer.to_str())
        cutter.enable_truncation(limit, direction=self._cut_direction)
        return cutter.encode(prompt).ids

    def _cut_ids(self, ids: list[int], limit: int) -> list[int]:
        return ids[-limit:] if self._cut_direction == "left" else ids[:limit]

    def _pad(self, rows: list[list[int]]) -> Prompts:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            cols = slice(width - len(row), width) if self.side == "left" else slice(0, len(row))
            ids[i, cols], mask[i, cols] = row, 1
        return Prompts(ids, mask, [len(r) for r in rows])


class TextStream:
    """One row's generated text, decoded as tokens arrive; holds back what might still change.

    Held back: an incomplete UTF-8 character (decodes to U+FFFD until its last byte arrives) and any
    tail that could be the start of a stop sequence. ``text`` stops before the first stop sequence. Before
    ``min_tokens`` tokens the stop sequences are not looked for (vLLM's ``min_tokens``): that text is final.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], min_tokens: int = 0):
        self.tokenizer, self.stop, self.min_tokens = tokenizer, tuple(stop), min_tokens
        self.floor = 0  # a stop sequence counts only from here: the text made before min_tokens is not searched
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False
        self.pending = ""  # emitted by add()/flush() but not yet handed to a streaming caller
        self.scores: list[Any] = []  # sampling.TokenScore per token, when the caller asked for logprobs
        self.scores_taken = 0  # scores already handed to a streaming caller

    def take_scores(self) -> list[Any]:
        """The token scores not yet handed out (a streamed chunk carries those of the tokens since the last)."""
        out, self.scores_taken = self.scores[self.scores_taken:], len(self.scores)
        return out

    def add(self, token: int) -> str:
        """Append a token; return the newly final text (possibly empty)."""
        self.ids.append(int(token))
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(self.ids) < self.min_tokens:  # final but an incomplete character's bytes (U+FFFD)
            self.floor = max(self.floor, len(self.text.rstrip("\ufffd")))
            return self._emit(max(self.floor, self.emitted))
        hit = self._find_stop()
        if hit is not None:
            self.text, self.stopped = self.text[:hit], True
            return self._emit(len(self.text))
        safe = len(self.text) - self._held_back()
        return self._emit(max(safe, self.emitted))

    def flush(self) -> str:
        """Generation ended: everything not yet emitted is final."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        chunk = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return chunk

    def _find_stop(self) -> int | None:
        hits = [i for i in (self.text.find(s, max(self.floor, self.emitted - len(s))) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        if self.text.endswith("\ufffd"):
            return len(self.text) - self.emitted
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest
