"""``logits_to_keep``: an int64 [1] input of exported decoders, logits for the last k positions only.

Generation needs the last position's logits after a prompt, not every position's: for a GPT-2-sized
model a 128-token prompt spends about half its time to first token in the vocabulary projection
(transformers' ``generate`` keeps only the last position too). Feeding 0 keeps every position
(validation and fidelity measurement do that); the runtime feeds 1.
"""
from __future__ import annotations

from typing import Any

INPUT = "logits_to_keep"


def kept_positions(logits_to_keep: Any, length: Any) -> slice:
    """The positions to keep among ``length`` ones, as a slice with a traced start (an unbacked size: the count
    is data). transformers' ``slice_logits_to_keep`` indexes ``hidden[:, kept, :]`` with it, which exports as one
    Slice; an index tensor would export as GatherND between Transposes, on which ORT 1.32's CPU session crashes
    once the graph is converted to fp16."""
    import torch

    keep = logits_to_keep[0].item()
    torch._check(keep >= 0)
    torch._check(keep <= length)
    return slice((length - keep) % length, None)  # keep == 0 starts at 0: every position, as transformers does
