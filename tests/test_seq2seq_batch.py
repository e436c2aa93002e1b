"""Continuous batching for encoder-decoder models: every request's output equals a solo Generator run whatever
joins or leaves around it — rows at different decoder steps and with sources of different lengths in one call."""
from __future__ import annotations

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

from onnxformer.errors import ArtifactError, InputError
from onnxformer.runtime.generation import Generator, seq2seq_batch
from onnxformer.runtime.generation.scheduler import Scheduler, SlotLimits
from onnxformer.runtime.generation.schedulers import batch_scheduler
from onnxformer.runtime.generation.seq2seq_batch import Seq2SeqScheduler

pytestmark = pytest.mark.timeout(300)

PROMPTS, MAX_NEW = BATCH_PROMPTS, BATCH_MAX_NEW


@pytest.fixture(scope="module", params=["t5", "bart", "marian"])
def s2s(request, gen_artifact) -> Generator:
    """T5: relative position bias; BART: learned positions (offset 2); Marian: sinusoidal positions."""
    return Generator.load(gen_artifact(request.param), batching=True)


def _solo(gen: Generator, prompts: list[str], max_new: list[int], **opts) -> list[list[int]]:
    return [gen.generate_ids([p], max_new_tokens=m, **opts)[0] for p, m in zip(prompts, max_new)]


@pytest.mark.parametrize("gap", [0, 2])
def test_greedy_rows_equal_solo_generation_whatever_joins_or_leaves(s2s, gap):
    scheduler = batch_scheduler(s2s, SlotLimits(max_slots=4, max_cached_tokens=4 * 80))
    assert isinstance(scheduler, Seq2SeqScheduler)
    rows: list[int] = []
    scheduler.on_step = lambda kind, n, _: rows.append(n) if kind == "decode" else None
    check_greedy_rows_equal_solo(s2s, scheduler, gap)
    assert max(rows) == 4 and sum(rows) > 2 * len(rows)  # rows at different steps really shared calls
    assert scheduler.cache.rows == scheduler.cross.rows == 0


def test_each_row_sits_right_aligned_in_both_caches(s2s):
    """Self-attention: the start token + tokens fed so far; cross-attention: one column per source token; the
    masks the step reads are 1 exactly there."""
    scheduler = batch_scheduler(s2s, SlotLimits(max_slots=3, max_cached_tokens=3 * 80))
    seqs = [scheduler.submit(p, 30) for p in PROMPTS[:3]]
    for _ in range(8):
        scheduler.step()
    sources = [len(s.prompt) for s in seqs]
    assert scheduler.cross.lengths == sources and scheduler.cross.width == max(sources)
    assert scheduler.cache.lengths == [len(s.ids) for s in seqs]  # start token + every token but the newest
    mask = scheduler.cross.mask(0)
    assert mask.sum(axis=1).tolist() == sources and mask[:, -1].all()
    cross = scheduler.cross.host_view(0)
    for r, n in enumerate(sources):  # masked columns stay zero, the row's own columns hold its keys
        assert not cross[r, :, : cross.shape[2] - n].any() and cross[r, :, -1].any()


def test_the_cross_cache_is_repacked_when_a_long_source_leaves(s2s):
    prompts = [PROMPTS[2] + " " + PROMPTS[6], PROMPTS[1], PROMPTS[3]]
    max_new = [2, 40, 30]
    solo = _solo(s2s, prompts, max_new)
    scheduler = batch_scheduler(s2s, SlotLimits(max_slots=3, max_cached_tokens=3 * 80))
    widths: list[int] = []
    scheduler.on_step = lambda *_: widths.append(scheduler.cross.width)
    assert [s.ids for s in staggered(scheduler, prompts, max_new, 0)] == solo
    assert max(widths) > 2 * min(w for w in widths if w) and widths[-1] < max(widths)


def test_seeded_sampling_is_reproducible_per_request(s2s):
    check_seeded_sampling(s2s, batch_scheduler, 80, repetition_penalty=1.3)  # the penalty counts the decoder's own ids


def test_cancelled_and_expired_rows_leave_and_free_their_slot(s2s):
    check_cancel_and_deadline(s2s, batch_scheduler)


def test_reset_ends_every_request_and_the_batch_runs_on(s2s):
    check_reset(s2s, batch_scheduler)  # both caches, the cross-attention one included, start again empty


def test_a_failing_row_does_not_disturb_the_others(s2s):
    check_a_failing_row(s2s, batch_scheduler(s2s, SlotLimits(max_slots=3, max_cached_tokens=3 * 80)))


def test_a_failing_prefill_fails_only_its_request(s2s, monkeypatch):
    scheduler = batch_scheduler(s2s, SlotLimits(max_slots=3, max_cached_tokens=3 * 80))
    running = scheduler.submit(PROMPTS[0], 20)
    scheduler.step()
    real = seq2seq_batch.Seq2SeqStepper.first
    monkeypatch.setattr(seq2seq_batch.Seq2SeqStepper, "first", lambda self: (_ for _ in ()).throw(RuntimeError("enc")))
    doomed = scheduler.submit(PROMPTS[1], 20)
    for _ in range(3):
        scheduler.step()
    monkeypatch.setattr(seq2seq_batch.Seq2SeqStepper, "first", real)
    scheduler.run_until_done()
    assert doomed.finish_reason == "error" and str(doomed.error) == "enc"
    assert running.ids == s2s.generate_ids([PROMPTS[0]], max_new_tokens=20)[0]


def test_limits_and_refusals(s2s, gen_artifact, monkeypatch):
    scheduler = batch_scheduler(s2s, SlotLimits(max_slots=2, max_cached_tokens=32))
    with pytest.raises(InputError, match=r"need \d+ cached tokens; this batch holds 32"):
        scheduler.submit(PROMPTS[2], 30)
    with pytest.raises(InputError, match="exceeds this model's .* decoder positions"):
        scheduler.submit("hi", s2s.max_positions)
    with pytest.raises(InputError, match="Scheduler batches decoder models; this artifact is seq2seq"):
        Scheduler(s2s)
    # An artifact whose step graph lacks an input the batch needs (exported before seq2seq batching) says so.
    monkeypatch.setattr(seq2seq_batch, "STEP_INPUTS", ("decoder_attention_mask", "an_input_it_lacks"))
    with pytest.raises(ArtifactError, match="takes no an_input_it_lacks .* re-export the checkpoint"):
        batch_scheduler(s2s)


def test_rows_with_their_own_min_tokens_and_ignore_eos_equal_their_solo_runs(s2s):
    check_eos_settings_per_row(s2s, batch_scheduler(s2s, SlotLimits(max_slots=4, max_cached_tokens=4 * 80)))
