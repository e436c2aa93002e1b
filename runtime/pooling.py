"""Sentence-embedding pooling over token states, as sentence-transformers defines it."""
from __future__ import annotations

import numpy as np

from onnxformer.errors import ArtifactError, InputError

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len", "last")


def pool(states: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """states (B, T, C), mask (B, T) of 0/1, padded on either side → (B, C)."""
    m = mask[..., None].astype(states.dtype)  # (B, T, 1)
    rows = np.arange(states.shape[0])
    if mode == "cls":  # the first real token: position 0 when right-padded, after the pads when left-padded
        return states[rows, np.argmax(mask > 0, axis=1)]
    if mode == "last":  # the last real token (decoder embedders: the one that has seen every other)
        return states[rows, last_token(mask)]
    if mode == "max":
        return np.where(m > 0, states, -1e9).max(axis=1)
    summed = (states * m).sum(axis=1)  # (B, C)
    counts = np.clip(m.sum(axis=1), 1e-9, None)  # (B, 1)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len":
        return summed / np.sqrt(counts)
    raise ArtifactError(f"unknown pooling {mode!r} in the manifest; expected one of {POOLINGS}")


def last_token(mask: np.ndarray) -> np.ndarray:
    """(B,) index of each row's last non-pad position, left or right padding alike (sentence-transformers'
    ``lasttoken``: the first 1 of the reversed mask). Every row has a real token: empty texts are refused."""
    return mask.shape[1] - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.clip(norms, 1e-12, None)


def truncate_dims(vectors: np.ndarray, dimensions: int | None, renormalize: bool) -> np.ndarray:
    """Matryoshka embeddings: the first ``dimensions`` components of (N, C) vectors, L2-normalised again when
    the model's vectors are unit length (sentence-transformers' ``truncate_dim`` then ``normalize``)."""
    if dimensions is None:
        return vectors
    full = vectors.shape[-1]
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= full:
        raise InputError(f"dimensions={dimensions!r} is not available: pass an integer from 1 to {full} "
                         "(this model's width)")
    cut = vectors[..., :dimensions]
    return l2_normalize(cut) if renormalize else cut
