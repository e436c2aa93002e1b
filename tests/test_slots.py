"""The decoder's slot graph (GroupQueryAttention, cache written in place) and continuous batching on it: the graph
agrees with PyTorch and with the shared-width graph, and every request's output equals a solo Generator run
whatever joins or leaves around it."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    BATCH_MAX_NEW,
    BATCH_PROMPTS,
    check_a_failing_row,
    check_eos_settings_per_row,
    check_greedy_rows_equal_solo,
    staggered,
)

from onnxformer.runtime.generation import Generator
from onnxformer.runtime.generation.scheduler import Scheduler, SlotLimits
from onnxformer.runtime.generation.schedulers import batch_scheduler
from onnxformer.runtime.generation.slots import ROLE, SlotCache, SlotScheduler, run_slots

pytestmark = pytest.mark.timeout(300)

PROMPTS, MAX_NEW = BATCH_PROMPTS, BATCH_MAX_NEW


# --- the graph -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "phi3", "mistral"])
def test_the_slot_graph_is_exported_validated_and_recorded(family, gen_artifact):
    import onnx
    from conftest import manifest_json

    art = gen_artifact(family)
    m = manifest_json(art)
    slots = m["generation"]["slots"]
    assert slots["role"] == ROLE and m["variants"]["fp32"]["components"][ROLE] == slots["file"]
    assert slots["validation"]["passed"] and set(slots["validation"]["max_abs_diff"]) == {
        "prompt logits", "prompt chunk logits", "decode logits"}
    assert max(slots["validation"]["max_abs_diff"].values()) < 1e-4
    ops = [n.op_type for n in onnx.load(str(art / slots["file"]), load_external_data=False).graph.node]
    assert ops.count("GroupQueryAttention") == 2  # one per layer
    assert "Softmax" not in ops  # the decomposed attention is gone


def test_slot_graph_logits_equal_the_shared_width_graph(gen):
    """Two prompts of different lengths prefilled in one right-padded call, then decoded in one call each step,
    against the shared-width graph run solo on each prompt: the same logits at every step."""
    from onnxformer.runtime.generation.options import make_options

    ids = [gen.encode_prompts([p], make_options(4)).ids[0].tolist() for p in PROMPTS[:2]]
    session = gen.sessions[ROLE]
    cache = SlotCache(session, gen.cache_layout, 2 * 64)
    for row in ids:
        cache.add(len(row) + 4)
    width = max(map(len, ids))
    padded = np.array([row + [0] * (width - len(row)) for row in ids])
    logits = run_slots(session, cache, 0, padded, np.tile(np.arange(width), (2, 1)), [len(r) for r in ids], keep=0)
    got = [[logits[r, len(row) - 1]] for r, row in enumerate(ids)]
    cache.lengths[:] = [len(r) for r in ids]
    tokens = [[int(np.argmax(g[0]))] for g in got]
    for _ in range(3):
        lengths = list(cache.lengths)
        out = run_slots(session, cache, 0, np.array(tokens)[:, -1:], np.array(lengths)[:, None],
                        [n + 1 for n in lengths])
        cache.lengths[:] = [n + 1 for n in lengths]
        for r in range(2):
            got[r].append(out[r, -1])
            tokens[r].append(int(np.argmax(out[r, -1])))
    for r, _row in enumerate(ids):
        run = gen.start(PROMPTS[r], 4)
        solo = [run.stepper.first()[0]]
        for t in tokens[r][:3]:
            solo.append(run.stepper.next(np.array([t]))[0])
        np.testing.assert_allclose(np.array(got[r]), np.array(solo), atol=1e-4)


def test_a_family_the_slot_graph_cannot_serve_keeps_the_shared_width_batch(tmp_path):
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint

    ckpt = make_generative_checkpoint(tmp_path / "ckpt", "gpt2", scale_attn_by_inverse_layer_idx=True)
    export_checkpoint(str(ckpt), tmp_path / "art")
    manifest = load_manifest(tmp_path / "art")
    assert manifest.generation.extra["slots"] == {
        "unsupported": "GPT-2's per-layer attention scaling / upcast reordering"}
    assert ROLE not in manifest.variant("fp32").components
    gen = Generator.load(tmp_path / "art")
    assert type(batch_scheduler(gen)) is Scheduler


# --- the scheduler -----------------------------------------------------------------------------------------------
def test_the_slot_graph_starts_only_for_the_batch(gen_artifact):
    """A solo generation never holds the slot graph's copy of the weights; the batch scheduler starts it."""
    gen = Generator.load(gen_artifact("gpt2"))
    gen.generate("Hi", max_new_tokens=3)
    assert ROLE in gen.sessions and ROLE not in dict(gen.sessions)  # recorded and verified, not started
    assert type(batch_scheduler(gen)) is SlotScheduler
    assert dict(gen.sessions)[ROLE] is gen.sessions[ROLE]  # started once, then kept
    server = Generator.load(gen_artifact("gpt2"), batching=True)  # what `onnxformer serve` loads
    assert not dict(server.sessions)  # neither graph started yet; the batch starts the one it runs
    batch = batch_scheduler(server)
    assert set(dict(server.sessions)) == {ROLE}
    seq = batch.submit("Hi", 3)
    batch.run_until_done()
    assert seq.ids == server.generate_ids(["Hi"], max_new_tokens=3)[0]  # the solo graph starts when asked for
    assert set(dict(server.sessions)) == {ROLE, "decoder"}


@pytest.mark.parametrize("gap,chunk", [(0, 0), (1, 3), (3, 64), (2, 1)])
def test_greedy_rows_equal_solo_generation_whatever_joins_or_leaves(gen, gap, chunk):
    calls: list[tuple[str, int, int]] = []  # (kind, rows in the call, rows running after it)
    scheduler = SlotScheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64, prefill_chunk=chunk))
    scheduler.on_step = lambda kind, rows, _: calls.append((kind, rows, len(scheduler.running)))
    addresses = scheduler.cache.buffer_addresses()
    check_greedy_rows_equal_solo(gen, scheduler, gap)
    assert scheduler.cache.slots == 0
    decodes = [rows for kind, rows, _ in calls if kind == "decode"]
    assert max(decodes) >= 3 and sum(decodes) < sum(MAX_NEW)  # rows decoded together (as many as the tokens allow)
    # a prefill never follows a prefill while rows are running (they would stall)
    assert not any(a[0] == b[0] == "prefill" and a[2] for a, b in zip(calls, calls[1:]))
    assert scheduler.cache.buffer_addresses() == addresses


def test_rows_sit_left_aligned_in_their_slots_and_equal_the_solo_cache(gen):
    scheduler = SlotScheduler(gen, SlotLimits(max_slots=2, max_cached_tokens=128))
    a, b = scheduler.submit(PROMPTS[2], 10), scheduler.submit(PROMPTS[1], 10)
    scheduler.step()  # a's prefill
    scheduler.step()  # a decodes (a prefill never follows a prefill while rows run)
    scheduler.step()  # b's prefill, straight into slot 1
    cache = scheduler.cache
    assert cache.slots == 2 and cache.lengths == [len(a.prompt) + 1, len(b.prompt)]
    solo = gen.start(PROMPTS[1], 1)
    solo.step()
    past = solo.stepper.cache.host_view(0)[0]  # (heads, length, head size) of the solo run
    np.testing.assert_allclose(cache.host_view(0)[1, :, :len(b.prompt)], past, atol=1e-5)
    scheduler.run_until_done()


def test_a_leaving_row_is_replaced_by_the_last_and_a_wider_joiner_relays_the_slots(gen):
    """Short rows, then a long prompt that needs wider slots, rows leaving in between: outputs stay exact."""
    prompts = [PROMPTS[1], PROMPTS[3], PROMPTS[1], PROMPTS[2] + " " + PROMPTS[6], PROMPTS[0]]
    max_new = [3, 30, 8, 60, 6]
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(prompts, max_new)]
    scheduler = SlotScheduler(gen, SlotLimits(max_slots=3, max_cached_tokens=3 * 100))
    widths = []
    scheduler.on_step = lambda *_: widths.append(scheduler.cache.width)
    seqs = staggered(scheduler, prompts, max_new, 2)
    assert [s.ids for s in seqs] == solo
    assert len(set(widths)) > 1  # the slots were re-laid at least once


def test_a_failing_row_or_prefill_does_not_disturb_the_others(gen):
    scheduler = SlotScheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64))
    bad = scheduler.prepare(PROMPTS[3], 5)
    bad.prompt = [10 ** 6]  # an id outside the vocabulary: its prefill call fails

    def a_failing_prefill(scheduler) -> None:
        for _ in range(8):
            scheduler.step()
        scheduler.enqueue(bad)

    check_a_failing_row(gen, scheduler, a_failing_prefill)
    assert bad.finish_reason == "error"
    assert scheduler.cache.slots == 0


def test_rows_with_their_own_min_tokens_and_ignore_eos_equal_their_solo_runs(gen):
    check_eos_settings_per_row(gen, SlotScheduler(gen, SlotLimits(max_slots=4, max_cached_tokens=4 * 64)))
