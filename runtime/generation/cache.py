"""The KV cache in preallocated buffers, bound to the graph through ONNX Runtime I/O binding.

Each cache tensor gets two flat buffers sized for the whole generation (batch × kv_heads ×
capacity × head_size). A step reads the past from one buffer and ONNX Runtime writes the present
(past + new tokens, contiguous) straight into the other; the next step swaps them. Nothing is
allocated or copied through numpy per token, and on CUDA the cache never leaves the device. The
same code path runs on CPU, which is how it is tested.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.dtypes import from_name


def device_of(session: ort.InferenceSession) -> str:
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


class KVCache:
    """Self-attention cache of one generation: ``length`` tokens so far, room for ``capacity``."""

    def __init__(self, session: ort.InferenceSession, layout: dict[str, Any], batch: int, capacity: int):
        """``layout``: the manifest's cache layout (names per layer, kv heads, head size, dtype)."""
        self.dtype = from_name(layout["dtype"]).numpy
        self.kv_heads, self.head_size = int(layout["num_kv_heads"]), int(layout["head_size"])
        self.past, self.present = flat_names(layout["past_inputs"]), flat_names(layout["present_outputs"])
        self.batch, self.capacity, self.length = batch, capacity, 0
        self.device = device_of(session)
        size = [batch * self.kv_heads * capacity * self.head_size]
        self._buffers = [[ort.OrtValue.ortvalue_from_shape_and_type(size, self.dtype, self.device, 0) for _ in self.past]
                         for _ in range(2)]
        self._current = 0  # which buffer set holds the past

    def shape(self, length: int) -> list[int]:
        return [self.batch, self.kv_heads, length, self.head_size]

    def bind(self, binding: ort.IOBinding, new_tokens: int, with_past: bool = True) -> None:
        """Past from the current buffers as inputs (unless the graph has none); presents into the others."""
        if self.length + new_tokens > self.capacity:  # a bug in the caller, not a user error
            raise RuntimeError(f"KV cache overflow: {self.length} + {new_tokens} > capacity {self.capacity}")
        src, dst = self._buffers[self._current], self._buffers[1 - self._current]
        for name, buf in zip(self.past if with_past else (), src):
            binding.bind_input(name, self.device, 0, self.dtype, self.shape(self.length), buf.data_ptr())
        for name, buf in zip(self.present, dst):
            binding.bind_output(name, self.device, 0, self.dtype, self.shape(self.length + new_tokens), buf.data_ptr())

    def host_view(self, index: int) -> np.ndarray:
        """The past tensor ``index`` (order of ``past``) as a numpy view of its buffer (CPU only; for checks)."""
        if self.device != "cpu":
            raise RuntimeError("host_view() reads CPU buffers; the cache lives on the GPU")
        flat = self._buffers[self._current][index].numpy()  # shares memory with the OrtValue
        return flat[: int(np.prod(self.shape(self.length)))].reshape(self.shape(self.length))

    def host_arrays(self) -> list[np.ndarray]:
        """Every past tensor as a host array (B, kv heads, length, head size): views on CPU, copies on CUDA."""
        size = int(np.prod(self.shape(self.length)))
        return [buf.numpy()[:size].reshape(self.shape(self.length)) for buf in self._buffers[self._current]]

    def buffer_addresses(self) -> list[int]:
        return [buf.data_ptr() for pair in self._buffers for buf in pair]

    def advance(self, new_tokens: int) -> None:
        """After a run: the presents just written become the past."""
        self.length += new_tokens
        self._current = 1 - self._current


def flat_names(pairs: list[list[str]]) -> list[str]:
    return [name for pair in pairs for name in pair]


def run_bound(session: ort.InferenceSession, arrays: dict[str, np.ndarray], values: dict[str, ort.OrtValue],
              cache: KVCache | None, new_tokens: int, outputs: list[str]) -> dict[str, Any]:
    """One run with host inputs, device-resident OrtValues and the cache bound; ``outputs`` are returned."""
    binding = session.io_binding()
    accepted = {i.name for i in session.get_inputs()}
    for name, array in arrays.items():
        if name in accepted:  # e.g. position_ids exists only for some families
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    device = device_of(session)
    for name in outputs:  # logits go to the host (sampling needs them); anything else stays on the device
        binding.bind_output(name, "cpu" if name == "logits" else device, 0)
    if cache is not None:  # bound after ``outputs`` so those come first in get_outputs()
        cache.bind(binding, new_tokens, with_past=cache.past[0] in accepted)
    session.run_with_iobinding(binding)
    if cache is not None:
        cache.advance(new_tokens)
    return dict(zip(outputs, binding.get_outputs()[: len(outputs)]))
