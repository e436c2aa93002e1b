"""Encoder-decoder models (T5, BART, Marian): encode once, first decoder step, then decoder with past.

The cross-attention cache (from the encoder output) is computed by the first decoder step and then
fed unchanged, as device-resident OrtValues, to every later step. A step graph exported with a decoder
attention mask and positions (so rows at different steps can share a call: runtime/generation/seq2seq_batch.py)
gets all-ones and the step number here, where every row is at the same step.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.roles import DECODER, DECODER_WITH_PAST, ENCODER
from onnxformer.runtime.generation.cache import KVCache, flat_names, run_bound
from onnxformer.runtime.generation.text import Prompts


class Seq2SeqStepper:
    def __init__(self, sessions: dict[str, ort.InferenceSession], cache_layout: dict[str, Any], sources: Prompts,
                 max_new: int, start_id: int):
        self.sessions, self.sources, self.start_id = sessions, sources, start_id
        self.cache = KVCache(sessions[DECODER_WITH_PAST], cache_layout, len(sources.ids), 1 + max_new)
        self.cross_past = flat_names(cache_layout["cross_past_inputs"])
        self.cross_present = flat_names(cache_layout["cross_present_outputs"])
        self.cross: dict[str, ort.OrtValue] = {}

    def first(self) -> np.ndarray:
        src = {"input_ids": self.sources.ids, "attention_mask": self.sources.mask}
        hidden = run_bound(self.sessions[ENCODER], src, {}, None, 0, ["last_hidden_state"])["last_hidden_state"]
        start = np.full((len(self.sources.ids), 1), self.start_id, dtype=np.int64)
        feeds = {"input_ids": start, "encoder_attention_mask": self.sources.mask}
        out = run_bound(self.sessions[DECODER], feeds, {"encoder_hidden_states": hidden}, self.cache, 1,
                        ["logits", *self.cross_present])
        self.cross = {past: out[present] for past, present in zip(self.cross_past, self.cross_present)}
        return out["logits"].numpy()[:, -1, :]

    def next(self, tokens: np.ndarray) -> np.ndarray:
        rows, length = len(tokens), self.cache.length
        feeds = {"input_ids": tokens[:, None], "encoder_attention_mask": self.sources.mask,
                 "decoder_attention_mask": np.ones((rows, length + 1), dtype=np.int64),
                 "decoder_position_ids": np.full((rows, 1), length, dtype=np.int64)}
        out = run_bound(self.sessions[DECODER_WITH_PAST], feeds, self.cross, self.cache, 1, ["logits"])
        return out["logits"].numpy()[:, -1, :]
