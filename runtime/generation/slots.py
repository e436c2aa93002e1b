"""Continuous batching on the decoder's slot graph (export/decoder_slots.py): GroupQueryAttention with the cache
written in place, per-row lengths, no shared width.

Every cache tensor is one preallocated buffer of ``max_cached_tokens`` × kv heads × head size, laid out as
(slots, kv heads, width, head size): row ``i``'s tokens are left-aligned in slot ``i`` and the running rows are
slots ``0 .. rows-1``. A call binds a run of consecutive slots as both the past and the present of every layer
(same memory), and ONNX Runtime writes only the new tokens; ``seqlens_k`` tells it each row's length. So a decode
step costs each row its own length, never the widest row's; nothing is concatenated, transposed or copied per step.

A prompt is prefilled alone, straight into the slot after the running rows (``prefill_chunk`` tokens per call,
between decode steps), and joins the batch by becoming a running row: no copy. A row that leaves is replaced by
the last running row (one slot copied); the slot ``width`` changes (every row re-laid, a rare copy) only when a
joiner needs more columns than a slot has, or when the rows × width would no longer fit the buffer. Slot copies
are numpy views on CPU; on CUDA they go through the host.

Everything the batch scheduler guarantees holds (runtime/generation/scheduler.py): admission by slots and cached
tokens, each row's own options and random stream, a failing prefill failing only its request.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.dtypes import from_name
from onnxformer.artifact.roles import SLOTS as ROLE
from onnxformer.runtime.generation.cache import device_of, flat_names
from onnxformer.runtime.generation.scheduler import Row, Scheduler

_ALIGN = 64  # slot widths are rounded up to this many columns, so a slightly longer joiner rarely re-lays the rows


class SlotCache:
    """One buffer per cache tensor; ``lengths[i]`` live tokens in slot ``i`` (running rows first, then the one
    being prefilled)."""

    def __init__(self, session: ort.InferenceSession, layout: dict[str, Any], tokens: int):
        self.dtype = from_name(layout["dtype"]).numpy
        self.kv_heads, self.head_size = int(layout["num_kv_heads"]), int(layout["head_size"])
        self.past, self.present = flat_names(layout["past_inputs"]), flat_names(layout["present_outputs"])
        self.device, self.tokens = device_of(session), tokens
        # Zeros (calloc'd on CPU, resident only once used): a slot's unused columns are never read, but a NaN
        # there would still be a NaN if a kernel ever multiplied it by a zero probability.
        self._buffers = [ort.OrtValue.ortvalue_from_numpy(np.zeros(tokens * self.kv_heads * self.head_size,
                                                                   dtype=self.dtype), self.device, 0)
                         for _ in self.past]
        self.width = 0  # columns per slot
        self.lengths: list[int] = []  # tokens cached per slot
        self.needs: list[int] = []  # tokens each slot's row may reach (prompt + max_new_tokens)

    @property
    def slots(self) -> int:
        return len(self.lengths)

    def bind(self, binding: ort.IOBinding, first: int, count: int) -> None:
        """Slots ``first .. first+count-1`` as every layer's past and, same memory, its present."""
        if (first + count) * self.width > self.tokens or first + count > self.slots:  # a scheduler bug
            raise RuntimeError(f"slot cache overflow: slots {first}+{count} of {self.slots} × {self.width} columns")
        shape = [count, self.kv_heads, self.width, self.head_size]
        offset = first * self._slot() * np.dtype(self.dtype).itemsize
        for past, present, buf in zip(self.past, self.present, self._buffers):
            address = buf.data_ptr() + offset
            binding.bind_input(past, self.device, 0, self.dtype, shape, address)
            binding.bind_output(present, self.device, 0, self.dtype, shape, address)

    def add(self, need: int) -> int:
        """A new slot after the others for a row of at most ``need`` tokens (re-lays the slots if the width must
        change); its index."""
        widest = max([need, *self.needs])
        rows = self.slots + 1
        if rows * widest > self.tokens:  # a scheduler bug: admission keeps rows × the widest need within tokens
            raise RuntimeError(f"slot cache overflow: {rows} rows × {widest} columns > {self.tokens}")
        if widest > self.width or rows * self.width > self.tokens:
            aligned = -(-widest // _ALIGN) * _ALIGN
            self.relayout(max(widest, min(aligned, self.tokens // rows)))
        self.lengths.append(0)
        self.needs.append(need)
        return self.slots - 1

    def remove(self, slot: int, last: int) -> None:
        """Free ``slot``: slot ``last`` moves into it, and every slot after ``last`` moves down one (at most the
        one being prefilled), so the slots stay a contiguous run ordered as the scheduler's rows."""
        order = [i for i in range(self.slots) if i != slot]
        if slot < last:
            order[slot:last] = [last, *order[slot:last - 1]]  # ``last`` takes ``slot``'s place, the rest keep theirs
        self._permute(order)

    def relayout(self, width: int) -> None:
        """Re-lay every slot at ``width`` columns (a copy of the live tokens through the host)."""
        views = self._views()
        kept = [self._slot_view(v, self.width)[: self.slots, :, : max(self.lengths, default=0)].copy() for v in views]
        self.width = width
        for view, old in zip(views, kept):
            self._slot_view(view, width)[: self.slots, :, : old.shape[2]] = old
        self._commit(views)

    def host_view(self, index: int) -> np.ndarray:
        """Cache tensor ``index`` as (slots, kv heads, width, head size); CPU only, for checks."""
        return self._slot_view(self._views()[index], self.width)[: self.slots]

    def buffer_addresses(self) -> list[int]:
        return [buf.data_ptr() for buf in self._buffers]

    # --- helpers ---------------------------------------------------------------------------------------
    def _permute(self, order: list[int]) -> None:
        """Slot ``i`` becomes old slot ``order[i]`` (only the slots whose content changes are copied)."""
        moves = [(i, src) for i, src in enumerate(order) if i != src]
        if moves:
            views = self._views()
            for view in views:
                slots = self._slot_view(view, self.width)
                for dst, src in moves:  # sources always lie after their destinations: copy in ascending order
                    slots[dst] = slots[src]
            self._commit(views)
        self.lengths = [self.lengths[src] for src in order]
        self.needs = [self.needs[src] for src in order]

    def _slot(self) -> int:
        return self.kv_heads * self.width * self.head_size

    def _slot_view(self, flat: np.ndarray, width: int) -> np.ndarray:
        per = self.kv_heads * width * self.head_size
        count = self.tokens // width if width else 0
        return flat[: count * per].reshape(count, self.kv_heads, width, self.head_size)

    def _views(self) -> list[np.ndarray]:
        return [buf.numpy() for buf in self._buffers]  # views on CPU; host copies on CUDA, written back below

    def _commit(self, views: list[np.ndarray]) -> None:
        if self.device != "cpu":
            for buf, view in zip(self._buffers, views):
                buf.update_inplace(view)


def run_slots(session: ort.InferenceSession, cache: SlotCache, first: int, ids: np.ndarray, positions: np.ndarray,
              seqlens: list[int], keep: int = 1) -> np.ndarray:
    """One call of the slot graph on slots ``first ..``: ``ids``/``positions`` (rows, S); ``seqlens`` each row's
    total length after the call. Logits (rows, kept, vocab) on the host."""
    binding = session.io_binding()
    binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
    binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions, dtype=np.int64))
    binding.bind_cpu_input("seqlens_k", np.asarray(seqlens, dtype=np.int32) - 1)
    binding.bind_cpu_input("total_sequence_length", np.array(max(seqlens), dtype=np.int32))
    binding.bind_cpu_input("logits_to_keep", np.array([keep], dtype=np.int64))
    binding.bind_output("logits", "cpu")  # first, so get_outputs()[0] is the logits
    cache.bind(binding, first, len(seqlens))
    session.run_with_iobinding(binding)
    return binding.get_outputs()[0].numpy()


class SlotPrefill:
    """One admitted prompt being run into its slot, ``chunk`` tokens per call."""

    def __init__(self, seq: Row, chunk: int):
        self.seqs = [seq]
        self.ids = np.asarray(seq.prompt, dtype=np.int64)[None, :]
        self.chunk = self.width if chunk <= 0 else chunk
        self.done = 0

    @property
    def width(self) -> int:
        return self.ids.shape[1]


class SlotScheduler(Scheduler):
    """``Scheduler``'s admission, options, stops and failures on the slot graph: see the module docstring."""

    ROLE = ROLE

    def _make_cache(self) -> SlotCache:
        return SlotCache(self.session, self.generator.cache_layout, self.limits.max_cached_tokens)

    @staticmethod
    def _prefill_group(joiners: list[Row]) -> list[Row]:
        return joiners[:1]  # a prompt prefills alone: GroupQueryAttention chunks a prompt only for one row

    def _start_prefill(self, joiners: list[Row]) -> SlotPrefill:
        prefill = SlotPrefill(joiners[0], self.limits.prefill_chunk)
        self.cache.add(joiners[0].need)  # its slot: right after the running rows
        return prefill

    def _prefill_step(self, prefill: SlotPrefill) -> list[Row]:
        seq, slot = prefill.seqs[0], len(self.running)
        end = min(prefill.done + prefill.chunk, prefill.width)
        start = time.perf_counter()
        try:
            logits = run_slots(self.session, self.cache, slot, prefill.ids[:, prefill.done:end],
                               np.arange(prefill.done, end)[None, :], [end])
        except Exception as e:  # only this request fails; the running rows go on
            self._drop_prefill(seq, e)
            return [seq]
        self.cache.lengths[slot] = prefill.done = end
        self.on_step("prefill", 1, time.perf_counter() - start)
        if end < prefill.width:
            return []
        self._prefill = None
        if self._emit(seq, logits[0, -1], 0):
            self.running.append(seq)  # its slot is already the one after the running rows
        else:
            self.cache.remove(slot, slot)
        return [seq]

    def _drop_prefill(self, seq: Row, error: BaseException) -> None:
        self._prefill = None
        seq.finish_reason, seq.error = "error", error
        self.cache.remove(len(self.running), len(self.running))

    def _leave(self, row: int) -> None:
        last = len(self.running) - 1
        self.cache.remove(row, last)
        moved = self.running.pop()
        if row < len(self.running):
            self.running[row] = moved

    def _fit(self) -> None:
        """Nothing to re-pack before a step: the slot width changes only when a joiner needs it (``SlotCache.add``)."""

    def _step(self, rows: list[Row]) -> np.ndarray:
        lengths = self.cache.lengths[: len(rows)]
        tokens = np.array([[seq.ids[-1]] for seq in rows], dtype=np.int64)
        logits = run_slots(self.session, self.cache, 0, tokens, np.asarray(lengths)[:, None], [n + 1 for n in lengths])
        self.cache.lengths[: len(rows)] = [n + 1 for n in lengths]
        return logits[:, -1]
