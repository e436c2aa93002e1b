"""Length-aware batching: sort by token length, cut batches under a padded-token budget and a size cap.

Padding is wasted compute; grouping texts of similar length keeps it near zero. Callers restore the
original order with the indices each batch carries.
"""
from __future__ import annotations

from typing import Sequence

from onnxformer.errors import InputError

DEFAULT_MAX_BATCH_TOKENS = 4096
DEFAULT_MAX_BATCH_SIZE = 32


def plan_batches(lengths: Sequence[int], max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> list[list[int]]:
    """Indices into ``lengths``, grouped so that ``len(batch) * longest <= max_batch_tokens`` (a single text
    longer than the budget gets a batch of its own) and ``len(batch) <= max_batch_size``."""
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise InputError(f"max_batch_tokens ({max_batch_tokens}) and max_batch_size ({max_batch_size}) must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first: each batch's first sets its width
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * width > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
