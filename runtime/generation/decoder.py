"""Decoder-only models (GPT-2, Llama, Qwen2, Mistral): left-padded prefill, then one token per step."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from onnxformer.runtime.generation.cache import KVCache, run_bound
from onnxformer.runtime.generation.text import Prompts


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded batch: count of real tokens so far (pads get 1, like transformers)."""
    return np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1).astype(np.int64)


class DecoderStepper:
    def __init__(self, session: ort.InferenceSession, cache_layout: dict[str, Any], prompts: Prompts, max_new: int,
                 position_ids: bool = True, logits_to_keep: bool = True):
        """``position_ids`` / ``logits_to_keep``: whether the graph takes them (the manifest's generation flags)."""
        self.session = session
        self.optional = {"position_ids": position_ids, "logits_to_keep": logits_to_keep}
        self.prompts = prompts
        batch, width = prompts.ids.shape
        self.cache = KVCache(session, cache_layout, batch, width + max_new)
        self.mask = np.zeros((batch, width + max_new), dtype=np.int64)  # grows one column per step
        self.mask[:, :width] = prompts.mask
        self.length = width
        self.next_position = positions_from_mask(prompts.mask)[:, -1:] + 1  # (B, 1)

    def first(self) -> np.ndarray:
        feeds = {"input_ids": self.prompts.ids, "attention_mask": self.prompts.mask,
                 "position_ids": positions_from_mask(self.prompts.mask),
                 "logits_to_keep": np.array([1], dtype=np.int64)}  # last position only
        return self._run(feeds, self.prompts.ids.shape[1])

    def next(self, tokens: np.ndarray) -> np.ndarray:
        self.mask[:, self.length] = 1
        feeds = {"input_ids": tokens[:, None], "attention_mask": self.mask[:, : self.length + 1],
                 "position_ids": self.next_position, "logits_to_keep": np.array([1], dtype=np.int64)}
        logits = self._run(feeds, 1)
        self.next_position = self.next_position + 1
        return logits

    def _run(self, feeds: dict[str, np.ndarray], new_tokens: int) -> np.ndarray:
        feeds = {k: v for k, v in feeds.items() if self.optional.get(k, True)}
        out = run_bound(self.session, feeds, {}, self.cache, new_tokens, ["logits"])
        self.length = self.cache.length
        return out["logits"].numpy()[:, -1, :]
