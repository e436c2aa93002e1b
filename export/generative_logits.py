"""``logits_to_keep``: an int64 [1] input of exported decoders, logits for the last k positions only.

Generation needs the last position's logits after a prompt, not every position's: for a GPT-2-sized
model a 128-token prompt spends about half its time to first token in the vocabulary projection
(transformers' ``generate`` keeps only the last position too). Feeding 0 keeps every position
(validation and fidelity measurement do that); the runtime feeds 1.
"""
from __future__ import annotations

from typing import Any

INPUT = "logits_to_keep"


def kept_positions(logits_to_keep: Any, length: Any) -> Any:
    """The positions to keep (an index tensor, which transformers' causal LMs take as ``logits_to_keep``)
    among ``length`` ones, traceable by torch.export: the count is data, so it is an unbacked size."""
    import torch

    keep = logits_to_keep[0].item()
    torch._check(keep >= 0)
    torch._check(keep <= length)
    # (length - keep) % length is the first kept position; keep == 0 gives 0, every position
    return torch.arange((length - keep) % length, length, device=logits_to_keep.device)
