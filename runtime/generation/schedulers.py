"""Which continuous batch serves a generator: the one place that picks among the schedulers (the policy of each
lives in its own module: the shared-width batch in scheduler.py, the slot graph's in slots.py, an encoder-decoder's
in seq2seq_batch.py)."""
from __future__ import annotations

from typing import Any

from onnxformer.artifact.roles import SLOTS
from onnxformer.runtime.generation.scheduler import Scheduler, SlotLimits
from onnxformer.runtime.generation.seq2seq_batch import Seq2SeqScheduler
from onnxformer.runtime.generation.slots import SlotScheduler


def batch_scheduler(generator: Any, limits: SlotLimits | None = None) -> Scheduler:
    """The continuous batch for ``generator``: an encoder-decoder's on its step graph (runtime/generation/
    seq2seq_batch.py; ArtifactError for an artifact exported before it could batch); a decoder's on its slot graph
    when the artifact has one and runs on the CPU, else the shared-width batch (artifacts exported before the slot
    graph, families it cannot serve, and CUDA, whose GroupQueryAttention kernel takes fp16/bf16 only and which has
    not been run here)."""
    if generator.kind == "seq2seq":
        return Seq2SeqScheduler(generator, limits)
    if SLOTS in getattr(generator, "sessions", {}) and getattr(generator, "provider", "cpu") == "cpu":
        return SlotScheduler(generator, limits)
    return Scheduler(generator, limits)
