"""Continuous batching for decoder-only models: one decode batch of slots that requests join and leave per step.

A submitted request waits until a slot and enough cached tokens are free, is prefilled (its prompt run once,
with the other admitted prompts of similar length, ``prefill_chunk`` tokens per call between decode steps),
and its row joins the decode batch: every later ``step()`` is one ONNX Runtime call for all rows. A row that
ends (end-of-sequence, a stop string, its ``max_new_tokens``, a cancel, its deadline, an error of its own)
leaves before the next step and its slot is reused by the next request.

The graph takes one past length for the whole batch, so the rows share a width ``W``: each row's tokens sit
right-aligned in its slot's columns and the attention mask hides the columns before them; every row keeps its
own position ids, options and random stream. The batch's cache lives in two preallocated buffer sets
(``max_cached_tokens`` × kv heads × head size per cache tensor), bound through I/O binding: a step reads the
past from one set and ONNX Runtime writes the present into the other. Joining copies a prefilled row into its
slot; leaving moves the last row into the freed slot; when the shared width drifts too far past the rows in it
they are re-packed. Those copies are numpy views on CPU; on CUDA they go through the host (decode steps
themselves never do).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

from onnxformer.artifact.dtypes import from_name
from onnxformer.artifact.roles import DECODER
from onnxformer.errors import InputError, InputKind
from onnxformer.runtime.generation.cache import KVCache, device_of, flat_names, run_bound
from onnxformer.runtime.generation.loop import SpecialTokens, force_tokens, new_counts, suppress_eos
from onnxformer.runtime.generation.options import GenerationOptions, make_options
from onnxformer.runtime.generation.sampling import choose, scores
from onnxformer.runtime.generation.text import TextStream


@dataclass(frozen=True)
class SlotLimits:
    """How big the decode batch may get: rows (slots) and cached tokens (rows × shared width). These defaults are
    the server's too (``serve/config.py`` reads them)."""

    max_slots: int = 16
    max_cached_tokens: int = 8192
    prefill_chunk: int = 64  # prompt tokens per prefill call, between decode steps (0: a whole prompt at once)

    def __post_init__(self) -> None:
        if self.max_slots < 1 or self.max_cached_tokens < 1 or self.prefill_chunk < 0:
            raise InputError(f"max_slots and max_cached_tokens must be >= 1 and prefill_chunk >= 0, got "
                             f"{self.max_slots}, {self.max_cached_tokens}, {self.prefill_chunk}")


_ids = itertools.count()


@dataclass(eq=False)
class Row:
    """One request in the scheduler: its prompt, options, random stream, text so far and how it ended."""

    prompt: list[int]
    opts: GenerationOptions
    stream: TextStream
    deadline: float | None = None  # time.monotonic(); the row leaves with finish_reason "timeout" after it
    id: int = field(default_factory=lambda: next(_ids))
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "timeout" | "error"
    error: BaseException | None = None
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    cancelled: bool = False
    seen: np.ndarray | None = None  # tokens the repetition penalty counts (prompt + generated)
    counts: np.ndarray | None = None  # generated tokens' counts, for the presence/frequency penalties (or None)
    rng: np.random.Generator | None = None
    listener: Any = None  # whoever waits on this request (the server's event); the scheduler never reads it
    observed: int = 0  # tokens already counted by the caller's metrics

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def ids(self) -> list[int]:
        return self.stream.ids

    @property
    def need(self) -> int:
        """Columns this row may occupy at most: its prompt plus every token it may still be fed."""
        return len(self.prompt) + self.opts.max_new_tokens

    def cancel(self) -> None:
        """Ask the row to leave at the next step (thread-safe: a flag the worker reads)."""
        self.cancelled = True

    def take(self) -> str:
        chunk, self.stream.pending = self.stream.pending, ""
        return chunk


class BatchCache:
    """The decode batch's KV cache: rows × shared width, right-aligned, in two preallocated buffer sets."""

    def __init__(self, session: ort.InferenceSession, layout: dict[str, Any], limits: SlotLimits):
        """``layout``: the manifest's cache layout (past input / present output names per layer, heads, dtype)."""
        self.dtype = from_name(layout["dtype"]).numpy
        self.kv_heads, self.head_size = int(layout["num_kv_heads"]), int(layout["head_size"])
        self.past, self.present = flat_names(layout["past_inputs"]), flat_names(layout["present_outputs"])
        self.device = device_of(session)
        self.tokens = limits.max_cached_tokens
        size = self.tokens * self.kv_heads * self.head_size
        # Zeros, not uninitialised memory: masked columns are multiplied by 0, and 0 × NaN would be NaN. On CPU the
        # OrtValue wraps numpy's calloc'd array, whose pages become resident only once the batch reaches them.
        self._sets = [[ort.OrtValue.ortvalue_from_numpy(np.zeros(size, dtype=self.dtype), self.device, 0)
                       for _ in self.past] for _ in range(2)]
        self._current = 0  # which set holds the past; a step's presents, and a prefill's, go to the other
        self.rows, self.width = 0, 0
        self.lengths: list[int] = []  # live (right-aligned) columns per row

    # --- the decode step ---------------------------------------------------------------------------------
    def bind(self, binding: ort.IOBinding, new_tokens: int, with_past: bool = True) -> None:
        if self.rows * (self.width + new_tokens) > self.tokens:  # a bug in the scheduler, not a user error
            raise RuntimeError(f"batch cache overflow: {self.rows} × {self.width + new_tokens} > {self.tokens}")
        src, dst = self._sets[self._current], self._sets[1 - self._current]
        for name, buf in zip(self.past if with_past else (), src):
            binding.bind_input(name, self.device, 0, self.dtype, self._shape(self.rows, self.width), buf.data_ptr())
        for name, buf in zip(self.present, dst):
            binding.bind_output(name, self.device, 0, self.dtype, self._shape(self.rows, self.width + new_tokens),
                                buf.data_ptr())

    def bind_past(self, binding: ort.IOBinding) -> None:
        """The batch as inputs only: for a cache no call writes (the seq2seq cross-attention cache)."""
        for name, buf in zip(self.past, self._sets[self._current]):
            binding.bind_input(name, self.device, 0, self.dtype, self._shape(self.rows, self.width), buf.data_ptr())

    def advance(self, new_tokens: int) -> None:
        self.width += new_tokens
        self.lengths = [n + new_tokens for n in self.lengths]
        self._current = 1 - self._current

    def mask(self, new_tokens: int) -> np.ndarray:
        """(rows, width + new_tokens) int64: 1 on each row's own tokens (the new ones included)."""
        cols = np.arange(self.width + new_tokens)[None, :]
        first = self.width - np.asarray(self.lengths, dtype=np.int64)[:, None]
        return (cols >= first).astype(np.int64)

    # --- rows joining from a prefill ------------------------------------------------------------------------
    def join(self, sources: list[np.ndarray], rows: list[int], lengths: list[int]) -> None:
        """Append rows ``rows`` of a prefill's cache (``sources``: one (b, heads, width, head size) array per
        cache tensor, left-padded) to the batch; re-packs first if they do not fit the shared width (wider for
        a longer prompt, narrower when the drifted width no longer fits)."""
        if not rows:
            return  # every prompt of the prefill ended at its first token
        needed = max([*self.lengths, *lengths])
        if needed > self.width or (self.rows + len(lengths)) * self.width > self.tokens:
            self.repack(needed)
        views = self._views()
        for r, n in zip(rows, lengths):
            b = self.rows
            for view, source in zip(views, sources):
                batch = view[: (b + 1) * self._row(self.width)].reshape(b + 1, self.kv_heads, self.width, self.head_size)
                batch[b, :, self.width - n:] = source[r, :, source.shape[2] - n:]
            self.rows += 1
            self.lengths.append(n)
        self._commit(views)

    def leave(self, row: int) -> None:
        """Remove ``row``: the last row moves into its slot (one row copied, the others untouched)."""
        last = self.rows - 1
        if row != last:
            views = self._views()
            for view in views:
                batch = view[: self.rows * self._row(self.width)].reshape(self.rows, self.kv_heads, self.width, self.head_size)
                batch[row] = batch[last]
            self._commit(views)
            self.lengths[row] = self.lengths[last]
        self.lengths.pop()
        self.rows -= 1
        if self.rows == 0:
            self.width = 0

    def repack(self, width: int) -> None:
        """Re-lay every row at ``width`` columns (right-aligned), through the other buffer set."""
        old, new = self._views(), self._host(self._sets[1 - self._current])
        for src, dst in zip(old, new):
            a = src[: self.rows * self._row(self.width)].reshape(self.rows, self.kv_heads, self.width, self.head_size)
            b = dst[: self.rows * self._row(width)].reshape(self.rows, self.kv_heads, width, self.head_size)
            for r, n in enumerate(self.lengths):
                b[r, :, width - n:] = a[r, :, self.width - n:]
        self._current = 1 - self._current
        self._commit(new)
        self.width = width

    def host_view(self, index: int) -> np.ndarray:
        """Past tensor ``index`` of the batch (rows, heads, width, head size); CPU only, for checks."""
        flat = self._views()[index]
        return flat[: self.rows * self._row(self.width)].reshape(self.rows, self.kv_heads, self.width, self.head_size)

    def buffer_addresses(self) -> list[int]:
        return [buf.data_ptr() for group in self._sets for buf in group]

    # --- helpers ---------------------------------------------------------------------------------------
    def _shape(self, rows: int, width: int) -> list[int]:
        return [rows, self.kv_heads, width, self.head_size]

    def _row(self, width: int) -> int:
        return self.kv_heads * width * self.head_size

    def _views(self) -> list[np.ndarray]:
        return self._host(self._sets[self._current])

    def _host(self, group: list[ort.OrtValue]) -> list[np.ndarray]:
        """Writable host arrays of a buffer set: views on CPU; on CUDA host copies that ``_commit`` writes back."""
        return [buf.numpy() for buf in group]

    def _commit(self, views: list[np.ndarray]) -> None:
        if self.device == "cpu":
            return  # the views are the buffers
        for buf, view in zip(self._sets[self._current], views):
            buf.update_inplace(view)


class Prefill:
    """Admitted prompts on their way into the batch: left-padded together, run ``chunk`` columns per call
    (between decode steps, so a long prompt never stalls the running rows for its whole length) into a cache
    of their own, then copied into slots."""

    def __init__(self, session: ort.InferenceSession, layout: dict[str, Any], seqs: list[Row], pad: int,
                 chunk: int):
        self.seqs, width = seqs, max(len(s.prompt) for s in seqs)
        self.ids = np.full((len(seqs), width), pad, dtype=np.int64)
        self.mask = np.zeros_like(self.ids)
        for r, seq in enumerate(seqs):
            self.ids[r, width - len(seq.prompt):], self.mask[r, width - len(seq.prompt):] = seq.prompt, 1
        self.positions = np.where(self.mask == 1, np.cumsum(self.mask, axis=1) - 1, 1).astype(np.int64)
        self.cache = KVCache(session, layout, len(seqs), width)
        self.chunk = width if chunk <= 0 else chunk
        self.done = 0  # columns already run

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    def feeds(self) -> tuple[dict[str, np.ndarray], int]:
        cols = slice(self.done, min(self.done + self.chunk, self.width))
        n = cols.stop - cols.start
        return {"input_ids": self.ids[:, cols], "attention_mask": self.mask[:, : cols.stop],
                "position_ids": self.positions[:, cols], "logits_to_keep": np.array([1], dtype=np.int64)}, n


class Scheduler:
    """Continuous batching over one decoder session. ``submit`` may be called from any thread; ``step`` runs
    on one thread (the server's worker) and is one prefill or one decode call."""

    ROLE = DECODER  # the generator's session this mode runs
    KIND = "decoder"  # the kind of model it batches

    def __init__(self, generator: Any, limits: SlotLimits | None = None):
        if generator.kind != self.KIND:
            raise InputError(f"{type(self).__name__} batches {self.KIND} models; this artifact is {generator.kind}: "
                             "use onnxformer.runtime.generation.slots.batch_scheduler(generator), which picks the "
                             "scheduler for its kind")
        self.generator, self.limits = generator, limits or SlotLimits()
        spec = generator.manifest.generation
        self.session = generator.sessions[self.ROLE]
        self.optional = {"position_ids": spec.position_ids, "logits_to_keep": spec.logits_to_keep}
        self.accepted = {i.name for i in self.session.get_inputs()}
        self.special: SpecialTokens = generator.special
        self.cache = self._make_cache()
        self.running: list[Row] = []  # row i of the cache is running[i]
        self.waiting: deque[Row] = deque()
        self._lock = threading.Lock()
        self._prefilled_last = False
        self._prefill: Prefill | None = None  # the prompts being prefilled, chunk by chunk
        self.on_step: Callable[[str, int, float], None] = lambda *_: None  # (kind, rows, seconds): metrics hook

    def _make_cache(self) -> Any:
        return BatchCache(self.session, self.generator.cache_layout, self.limits)

    def _start_prefill(self, joiners: list[Row]) -> Any:
        return Prefill(self.session, self.generator.cache_layout, joiners, self.special.pad, self.limits.prefill_chunk)

    # --- requests ------------------------------------------------------------------------------------------
    def submit(self, prompt: str, max_new_tokens: int | None = None, deadline: float | None = None,
               **options: Any) -> Row:
        """Tokenize and check one prompt (bad input raises here) and queue it."""
        return self.enqueue(self.prepare(prompt, max_new_tokens, deadline, **options))

    def enqueue(self, seq: Row) -> Row:
        with self._lock:
            self.waiting.append(seq)
        return seq

    def prepare(self, prompt: str, max_new_tokens: int | None = None, deadline: float | None = None,
                **options: Any) -> Row:
        """A request checked and tokenized, not yet queued (bad input raises here)."""
        opts = make_options(max_new_tokens, **options)
        inputs = self.generator.encode_inputs([prompt], opts)
        seq = Row(inputs.ids[0].tolist(), opts,
                  TextStream(self.generator.prompts.tokenizer, opts.stop, opts.min_tokens), deadline)
        if seq.need > self.limits.max_cached_tokens:
            raise InputError(f"the prompt's {len(seq.prompt)} tokens + max_new_tokens={opts.max_new_tokens} need "
                             f"{seq.need} cached tokens; this batch holds {self.limits.max_cached_tokens}: "
                             "shorten the prompt or lower max_new_tokens", InputKind.TOO_LONG)
        return seq

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting or self._prefill)

    def reset(self, error: BaseException) -> list[Row]:
        """Drop every request (after ``error``, a failure the batch cannot attribute to a row) and start again from
        empty caches. Returns the requests dropped, each ended with ``finish_reason`` "error" unless it had ended."""
        with self._lock:
            dropped = [*self.running, *(self._prefill.seqs if self._prefill else []), *self.waiting]
            self.waiting.clear()
        self.running, self._prefill = [], None
        self.cache = self._make_cache()
        for seq in dropped:
            if not seq.done:
                seq.finish_reason, seq.error = "error", error
        return dropped

    def history(self, seq: Row) -> list[int]:
        """The ids a row's repetition penalty counts as seen before its first token: a decoder's prompt."""
        return seq.prompt

    # --- the loop ---------------------------------------------------------------------------------------
    def step(self) -> list[Row]:
        """One model call: a prefill of admitted requests (at most every other call while rows are running),
        else one decode step of every running row. Returns the requests that produced text or ended."""
        changed = self._drop_finished()
        if self._prefill is None and not (self._prefilled_last and self.running):
            joiners = self._admit()
            if joiners:
                self._prefill = self._start_prefill(joiners)
        if self._prefill is not None and not (self._prefilled_last and self.running):
            self._prefilled_last = True
            return changed + self._prefill_step(self._prefill)
        self._prefilled_last = False
        if not self.running:
            return changed
        return changed + self._decode()

    def run_until_done(self) -> None:
        while self.busy:
            self.step()

    def _drop_finished(self) -> list[Row]:
        """Rows cancelled or past their deadline leave now; so do waiting requests cancelled or expired."""
        now, gone = time.monotonic(), []
        with self._lock:
            for seq in list(self.waiting):
                if self._expire(seq, now):
                    self.waiting.remove(seq)
                    gone.append(seq)
        for row in reversed(range(len(self.running))):
            if self.running[row].done or self._expire(self.running[row], now):
                gone.append(self.running[row])
                self._leave(row)
        return gone

    def _expire(self, seq: Row, now: float) -> bool:
        if seq.cancelled and not seq.done:
            seq.finish_reason = "cancelled"
        elif seq.deadline is not None and now > seq.deadline and not seq.done:
            seq.finish_reason = "timeout"
        return seq.done

    def _leave(self, row: int) -> None:
        self.cache.leave(row)
        last = self.running.pop()
        if row < len(self.running):
            self.running[row] = last

    def _admit(self) -> list[Row]:
        """Waiting requests that fit, oldest first: a free slot and rows × the widest need within the tokens."""
        joiners: list[Row] = []
        with self._lock:
            while self.waiting:
                rows = len(self.running) + len(joiners) + 1
                widest = max(s.need for s in [*self.running, *joiners, self.waiting[0]])
                if rows > self.limits.max_slots or rows * widest > self.limits.max_cached_tokens:
                    break
                joiners.append(self.waiting.popleft())
            group = self._prefill_group(joiners)
            self.waiting.extendleft(reversed(joiners[len(group):]))  # admitted next time, still first in line
        return group

    @staticmethod
    def _prefill_group(joiners: list[Row]) -> list[Row]:
        """The first admitted prompts that one padded prefill can take with little padding (≤ 25% of its
        tokens): on CPU a prefill is compute-bound, so padding a short prompt to a long one costs real time."""
        group: list[Row] = []
        widest, real = 0, 0
        for seq in joiners:
            n = len(seq.prompt)
            if group and (len(group) + 1) * max(widest, n) > 1.25 * (real + n):
                break
            group.append(seq)
            widest, real = max(widest, n), real + n
        return group

    def _prefill_step(self, prefill: Any) -> list[Row]:  # this class's Prefill; subclasses' own kinds
        """One chunk of the prefill; after the last, each prompt's first token, and its row joins the batch."""
        joiners = prefill.seqs
        feeds, n = prefill.feeds()
        start = time.perf_counter()
        try:
            feeds = {k: v for k, v in feeds.items() if self.optional.get(k, True)}
            out = run_bound(self.session, feeds, {}, prefill.cache, n, ["logits"])
            prefill.done += n
            if prefill.done < prefill.width:
                self.on_step("prefill", len(joiners), time.perf_counter() - start)
                return []
            logits = out["logits"].numpy()[:, -1, :]
        except Exception as e:  # only the requests of this prefill fail; the running rows go on
            self._prefill = None
            for seq in joiners:
                seq.finish_reason, seq.error = "error", e
            return joiners
        self._prefill = None
        self.on_step("prefill", len(joiners), time.perf_counter() - start)
        stay = [r for r, seq in enumerate(joiners) if self._emit(seq, logits[r], 0)]
        sources = prefill.cache.host_arrays()
        self.cache.join(sources, stay, [len(joiners[r].prompt) for r in stay])
        self.running += [joiners[r] for r in stay]
        return joiners

    def _decode(self) -> list[Row]:
        """One decode step of every running row (``_step``, the subclass's model call), then each row's token."""
        self._fit()
        rows = list(self.running)
        start = time.perf_counter()
        try:
            logits = self._step(rows)
        except Exception as e:  # the call itself failed: no row can be attributed, all of them end
            for seq in rows:
                seq.finish_reason, seq.error = "error", e
            return rows
        self.on_step("decode", len(rows), time.perf_counter() - start)
        for r, seq in enumerate(rows):
            self._emit(seq, logits[r], len(seq.ids))
        return rows

    def _step(self, rows: list[Row]) -> np.ndarray:
        """The model call of a decode step: each row's last token in, last-position logits (rows, vocab) out."""
        cache = self.cache
        tokens = np.array([seq.ids[-1] for seq in rows], dtype=np.int64)[:, None]
        positions = np.asarray(cache.lengths, dtype=np.int64)[:, None]
        feeds = {"input_ids": tokens, "attention_mask": cache.mask(1), "position_ids": positions,
                 "logits_to_keep": np.array([1], dtype=np.int64)}
        feeds = {k: v for k, v in feeds.items() if self.optional.get(k, True)}
        return run_bound(self.session, feeds, {}, cache, 1, ["logits"])["logits"].numpy()[:, -1, :]

    def _fit(self) -> None:
        """Re-pack the rows at the width they need when the shared width would overflow the cached tokens
        or has drifted far past the longest row (columns every row masks cost compute and copies)."""
        cache, longest = self.cache, max(self.cache.lengths)
        over = cache.rows * (cache.width + 1) > self.limits.max_cached_tokens
        if over or cache.width - longest > max(16, cache.width // 4):
            cache.repack(longest)

    def _emit(self, seq: Row, logits: np.ndarray, step: int) -> bool:
        """Choose ``seq``'s next token from its logits, with its own options and random stream; True while it
        runs on. A failure here ends this row only."""
        try:
            if seq.rng is None:
                seq.rng = np.random.default_rng(seq.opts.seed)
                seq.seen = np.zeros((1, logits.shape[-1]), dtype=bool)
                seq.seen[0, self.history(seq)] = True
                seq.counts = new_counts(seq.seen.shape, seq.opts)
            masked = suppress_eos(logits[None, :], step, seq.opts, self.special)
            forced = force_tokens(masked, step, seq.opts.max_new_tokens, self.special)
            assert seq.seen is not None  # set at the row's first token, above
            token = int(choose(forced, seq.seen, seq.opts, seq.rng, seq.counts)[0])
            seq.seen[0, token] = True
            if seq.counts is not None:
                seq.counts[0, token] += 1
            if seq.opts.logprobs is not None:
                seq.stream.scores += scores(logits[None, :], np.array([token]), seq.opts.logprobs)
            seq.stream.pending += seq.stream.add(token)
            now = time.monotonic()
            seq.first_token_at = seq.first_token_at or now
            seq.token_times.append(now)
            if seq.stream.stopped or (token in self.special.eos and not seq.opts.ignore_eos):
                seq.finish_reason = "stop"
            elif len(seq.ids) >= seq.opts.max_new_tokens:
                seq.finish_reason = "length"
        except Exception as e:
            seq.finish_reason, seq.error = "error", e
        if seq.done:
            seq.stream.pending += seq.stream.flush()
        return not seq.done
