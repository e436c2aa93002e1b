"""Continuous batching for encoder-decoder models (T5, BART, Marian): one decoder call steps every running row.

A request is prefilled alone, by the same two calls as a solo generation (``Seq2SeqStepper.first``: its source
through the encoder, then the first decoder step), which give its first token, its self-attention cache (one
column: the start token) and its cross-attention cache (one column per source token). Its row then joins the
decode batch. The step graph (``decoder_with_past``, exported with a decoder attention mask and, for families with
absolute positions, per-row positions: export/seq2seq_graph.py) runs all rows at once:

- self-attention cache: rows × a shared width, each row right-aligned behind masked columns — the decoder-only
  shared-width ``BatchCache`` — with the row's own positions; a step writes the present into the other buffer set;
- cross-attention cache: rows × the longest source in the batch, right-aligned the same way, masked by the encoder
  attention mask; no call writes it, so a step binds it as input only.

A leaving row's slot takes the last row (one row copied per cache); both caches re-pack when their width drifts far
past the rows in them. Admission, options, stops, deadlines and failure isolation are ``Scheduler``'s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.roles import DECODER_WITH_PAST
from onnxformer.errors import ArtifactError
from onnxformer.runtime.generation.scheduler import BatchCache, Row, Scheduler, SlotLimits
from onnxformer.runtime.generation.seq2seq import Seq2SeqStepper
from onnxformer.runtime.generation.text import Prompts

STEP_INPUTS = ("decoder_attention_mask",)  # what the step graph needs to take rows at different steps


@dataclass
class SourcePrefill:
    """One admitted request on its way into the batch (its encoder pass and first decoder step are one prefill)."""

    seqs: list[Row]


class Seq2SeqScheduler(Scheduler):
    """``Scheduler``'s admission, options, stops and failures for an encoder-decoder artifact: see the docstring."""

    ROLE = DECODER_WITH_PAST
    KIND = "seq2seq"

    def __init__(self, generator: Any, limits: SlotLimits | None = None):
        step = generator.sessions[self.ROLE]
        missing = [name for name in STEP_INPUTS if name not in {i.name for i in step.get_inputs()}]
        if missing:
            raise ArtifactError(f"{generator.directory}: its decoder_with_past graph takes no {', '.join(missing)} "
                                "(exported before seq2seq batching), so rows at different steps cannot share a call; "
                                "re-export the checkpoint with this version, or serve it with --no-continuous-batching")
        super().__init__(generator, limits)

    def _make_cache(self) -> BatchCache:
        layout = self.generator.cache_layout
        cross = {**layout, "past_inputs": layout["cross_past_inputs"], "present_outputs": layout["cross_present_outputs"]}
        self.cross = BatchCache(self.session, cross, self.limits)
        return BatchCache(self.session, layout, self.limits)

    def history(self, seq: Row) -> list[int]:
        return [self.generator.start_id]  # the decoder's own input so far, as in a solo run (not the source)

    @staticmethod
    def _prefill_group(joiners: list[Row]) -> list[Row]:
        return joiners[:1]  # alone: the same encoder and first-step calls as a solo generation of it

    def _start_prefill(self, joiners: list[Row]) -> SourcePrefill:
        return SourcePrefill(joiners[:1])

    def _prefill_step(self, prefill: SourcePrefill) -> list[Row]:
        seq = prefill.seqs[0]
        self._prefill = None
        source = np.asarray([seq.prompt], dtype=np.int64)
        start = time.perf_counter()
        try:  # only this request fails; the running rows go on
            first = Seq2SeqStepper(self.generator.sessions, self.generator.cache_layout,
                                   Prompts(source, np.ones_like(source), [source.shape[1]]), 0, self.generator.start_id)
            logits = first.first()
            own = first.cache.host_arrays()  # (1, heads, 1, head size): the start token
            cross = [first.cross[name].numpy() for name in self.cross.past]  # (1, heads, source, head size)
        except Exception as e:
            seq.finish_reason, seq.error = "error", e
            return [seq]
        self.on_step("prefill", 1, time.perf_counter() - start)
        if self._emit(seq, logits[0], 0):
            self.cache.join(own, [0], [1])
            self.cross.join(cross, [0], [source.shape[1]])
            self.running.append(seq)
        return [seq]

    def _leave(self, row: int) -> None:
        self.cross.leave(row)
        super()._leave(row)

    def _fit(self) -> None:
        super()._fit()
        cross, longest = self.cross, max(self.cross.lengths)
        if cross.width - longest > max(16, cross.width // 4):
            cross.repack(longest)

    def _step(self, rows: list[Row]) -> np.ndarray:
        """One step of every row: host inputs, the cross cache as input, the self cache past → present."""
        feeds = {"input_ids": np.array([[seq.ids[-1]] for seq in rows], dtype=np.int64),
                 "encoder_attention_mask": self.cross.mask(0), "decoder_attention_mask": self.cache.mask(1),
                 "decoder_position_ids": np.asarray(self.cache.lengths, dtype=np.int64)[:, None]}
        binding: ort.IOBinding = self.session.io_binding()
        for name, array in feeds.items():
            if name in self.accepted:  # decoder_position_ids: only families with absolute positions
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output("logits", "cpu")  # first, so get_outputs()[0] is the logits
        self.cross.bind_past(binding)
        self.cache.bind(binding, 1)
        self.session.run_with_iobinding(binding)
        self.cache.advance(1)
        return binding.get_outputs()[0].numpy()[:, -1, :]
