"""Continuous batching: every request's output equals a solo Generator run whatever joins or leaves around it."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    BATCH_MAX_NEW,
    BATCH_PROMPTS,
    check_a_failing_row,
    check_cancel_and_deadline,
    check_eos_settings_per_row,
    check_greedy_rows_equal_solo,
    check_reset,
    check_seeded_sampling,
    staggered,
)

from onnxformer.errors import InputError
from onnxformer.runtime.generation import Generator
from onnxformer.runtime.generation.scheduler import Scheduler, SlotLimits
from onnxformer.runtime.generation.slots import SlotScheduler

pytestmark = pytest.mark.timeout(300)

PROMPTS, MAX_NEW = BATCH_PROMPTS, BATCH_MAX_NEW


@pytest.mark.parametrize("gap", [0, 1, 3])
def test_greedy_rows_equal_solo_generation_whatever_joins_or_leaves(gen, gap):
    scheduler = Scheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64))
    check_greedy_rows_equal_solo(gen, scheduler, gap)
    assert scheduler.cache.rows == 0


@pytest.mark.parametrize("chunk", [0, 3])
def test_chunked_prefill_interleaves_with_decoding_and_stays_exact(gen, chunk):
    """A prompt prefilled ``chunk`` tokens per call (0: whole) between the running rows' decode steps."""
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(PROMPTS, MAX_NEW)]
    calls: list[str] = []
    scheduler = Scheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64, prefill_chunk=chunk))
    scheduler.on_step = lambda kind, *_: calls.append(kind)
    assert [s.ids for s in staggered(scheduler, PROMPTS, MAX_NEW, 1)] == solo
    longest = max(len(gen.prompts.tokenizer.encode(p).ids) for p in PROMPTS)
    assert calls.count("prefill") >= (len(PROMPTS) if chunk == 0 else -(-longest // chunk) + len(PROMPTS) - 1)
    assert "prefill prefill" not in " ".join(calls[calls.index("decode"):])  # never two in a row while rows run


def test_rows_share_decode_calls_and_slots_are_reused(gen):
    calls: list[tuple[str, int]] = []
    scheduler = Scheduler(gen, SlotLimits(max_slots=3, max_cached_tokens=3 * 64))
    scheduler.on_step = lambda kind, rows, _: calls.append((kind, rows))
    addresses = scheduler.cache.buffer_addresses()
    staggered(scheduler, PROMPTS, MAX_NEW, 2)
    decodes = [rows for kind, rows in calls if kind == "decode"]
    assert max(decodes) == 3  # never more rows than slots, and the batch did fill
    assert sum(decodes) < sum(MAX_NEW)  # far fewer calls than tokens: rows decode together
    assert scheduler.cache.buffer_addresses() == addresses  # the same preallocated buffers throughout


def test_width_is_repacked_when_rows_leave(gen):
    """A long prompt leaves early, short rows run on: the shared width is re-packed, outputs stay exact."""
    prompts = [PROMPTS[2] + " " + PROMPTS[6], PROMPTS[1], PROMPTS[3], PROMPTS[1]]
    max_new = [3, 60, 40, 20]
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(prompts, max_new)]
    scheduler = Scheduler(gen, SlotLimits(max_slots=2, max_cached_tokens=2 * 90))
    widths = []
    scheduler.on_step = lambda *_: widths.append(scheduler.cache.width)
    seqs = staggered(scheduler, prompts, max_new, 1)
    assert [s.ids for s in seqs] == solo
    assert any(b < a for a, b in zip(widths, widths[1:]))  # re-packed narrower at least once


BOTH = pytest.mark.parametrize("batch", [Scheduler, SlotScheduler], ids=["shared-width", "slots"])


@BOTH
def test_seeded_sampling_is_reproducible_per_request(gen, batch):
    check_seeded_sampling(gen, batch, 64)


def test_stop_string_ends_a_row_early(gen):
    full = gen.generate(PROMPTS[0], max_new_tokens=24)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    scheduler = Scheduler(gen, SlotLimits(max_slots=2, max_cached_tokens=128))
    seqs = staggered(scheduler, PROMPTS[:2], [24, 24], 1, stop=stop)
    assert seqs[0].stream.text == gen.generate(PROMPTS[0], max_new_tokens=24, stop=stop)
    assert seqs[0].finish_reason == "stop" and stop not in seqs[0].stream.text


@BOTH
def test_cancelled_and_expired_rows_leave_and_free_their_slot(gen, batch):
    check_cancel_and_deadline(gen, batch)


@BOTH
def test_reset_ends_every_request_and_the_batch_runs_on(gen, batch):
    check_reset(gen, batch)


def test_a_failing_row_does_not_disturb_the_others(gen):
    check_a_failing_row(gen, Scheduler(gen, SlotLimits(max_slots=3, max_cached_tokens=3 * 64)))


@BOTH
def test_limits_are_checked_at_submit(gen, gen_artifact, batch):
    scheduler = batch(gen, SlotLimits(max_slots=2, max_cached_tokens=32))
    with pytest.raises(InputError, match=r"need \d+ cached tokens; this batch holds 32"):
        scheduler.submit(PROMPTS[2], 30)
    with pytest.raises(InputError, match="max_new_tokens"):
        scheduler.submit("hi", 0)
    with pytest.raises(InputError, match="batches decoder models; this artifact is seq2seq"):
        batch(Generator.load(gen_artifact("t5")))
    with pytest.raises(InputError, match="max_slots"):
        SlotLimits(max_slots=0)


def test_the_batch_cache_starts_zeroed_in_its_own_buffers(gen):
    """Masked columns are multiplied by 0 in attention, so they must hold zeros, never garbage that could be NaN;
    and every buffer is its own memory (a view shared between the past and present sets would corrupt a step)."""
    cache = Scheduler(gen, SlotLimits(max_slots=2, max_cached_tokens=64)).cache
    flats = [buf.numpy() for group in cache._sets for buf in group]
    assert all(flat.size == 64 * cache.kv_heads * cache.head_size and not flat.any() for flat in flats)
    assert len(set(cache.buffer_addresses())) == len(flats)


def test_the_batch_cache_holds_each_row_right_aligned(gen):
    scheduler = Scheduler(gen, SlotLimits(max_slots=2, max_cached_tokens=128))
    a, b = scheduler.submit(PROMPTS[2], 10), scheduler.submit(PROMPTS[1], 10)
    scheduler.step()  # a long and a short prompt: prefilled apart (one would be mostly padding)
    assert scheduler.cache.rows == 1 and list(scheduler.waiting) == [b]
    scheduler.step()  # a decodes (a prefill never follows a prefill while rows run)
    scheduler.step()  # b's prefill joins it
    cache = scheduler.cache
    assert cache.rows == 2 and cache.lengths == [len(a.prompt) + 1, len(b.prompt)]
    assert cache.width == len(a.prompt) + 1
    mask = cache.mask(1)
    assert mask[1].tolist() == [0] * (cache.width - len(b.prompt)) + [1] * (len(b.prompt) + 1)
    solo = Generator.start(gen, PROMPTS[1], 1)
    solo.step()
    past = solo.stepper.cache.host_view(0)[0]  # (heads, length, head size) of the solo run
    np.testing.assert_allclose(cache.host_view(0)[1, :, -len(b.prompt):], past, atol=1e-5)


def test_rows_with_their_own_min_tokens_and_ignore_eos_equal_their_solo_runs(gen):
    check_eos_settings_per_row(gen, Scheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64)))
