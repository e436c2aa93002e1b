"""Validate exported generative graphs against PyTorch: several prompt lengths, and steps with a non-empty past.

The ONNX side runs the way the runtime does (prefill with an empty cache, then chunks fed with the
cache it returned); the PyTorch side runs the whole sequence at once without a cache. Agreement of
every step's logits therefore checks the exported cache handling, not only one forward pass.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from onnxformer.artifact.roles import DECODER, DECODER_WITH_PAST, ENCODER
from onnxformer.errors import ValidationError
from onnxformer.export.validate import summarize
from onnxformer.runtime.session import create_session

_PAST = re.compile(r"^past_key_values\.(\d+)\.(?:(decoder|encoder)\.)?(key|value)$")
# (prompt lengths per row, chunk sizes fed after the prefill with the cache)
DECODER_CASES = (((5, 11), (3, 1)), ((1,), (1, 1)), ((8, 2, 6), (2,)))
# (source lengths per row, decoder tokens fed one at a time after the start token)
SEQ2SEQ_CASES = (((7, 12), 4), ((3,), 3))


def past_names(names: list[str], kind: str | None = None) -> list[tuple[str, str]]:
    """Cache input names per layer as (key, value), in layer order; ``kind`` = decoder/encoder for seq2seq."""
    found: dict[int, dict[str, str]] = {}
    for name in names:
        m = _PAST.match(name)
        if m and m.group(2) == kind:
            found.setdefault(int(m.group(1)), {})[m.group(3)] = name
    return [(found[i]["key"], found[i]["value"]) for i in sorted(found)]


def present_name(past: str) -> str:
    return past.replace("past_key_values.", "present.", 1)


def _left_padded(rng: np.random.Generator, lengths: tuple[int, ...], extra: int, vocab: int, pad: int):
    width = max(lengths)
    ids = rng.integers(4, vocab, size=(len(lengths), width + extra), dtype=np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate(lengths):
        mask[row, : width - n] = 0
        ids[row, : width - n] = pad
    positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)  # what transformers' generate computes
    return ids, mask, positions, width


def _check(diffs: dict[str, float], name: str, got: np.ndarray, ref: np.ndarray, keep: np.ndarray) -> None:
    if got.shape != ref.shape:
        raise ValidationError(f"{name}: ONNX gives shape {got.shape}, PyTorch {ref.shape}; the export is wrong")
    diffs[name] = float(np.abs(got - ref)[keep].max())


def validate_decoder(model: Any, path: Path, vocab: int, pad: int, atol: float, seed: int = 0) -> dict[str, Any]:
    import torch

    session = create_session(path)
    inputs = [i.name for i in session.get_inputs()]
    layers = past_names(inputs)
    shape = next(i.shape for i in session.get_inputs() if i.name == layers[0][0])
    rng = np.random.default_rng(seed)
    cases = []
    for lengths, chunks in DECODER_CASES:
        ids, mask, positions, width = _left_padded(rng, lengths, sum(chunks), vocab, pad)
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        position_ids=torch.from_numpy(positions), use_cache=False).logits.float().numpy()
        empty = np.zeros((len(lengths), shape[1], 0, shape[3]), dtype=np.float32)
        past = {n: empty for pair in layers for n in pair}
        logits, start, diffs = [], 0, dict[str, float]()
        for end in np.cumsum((width, *chunks)):
            feeds = {"input_ids": ids[:, start:end], "attention_mask": mask[:, :end],
                     "position_ids": positions[:, start:end], "logits_to_keep": np.array([0]), **past}
            out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {k: feeds[k] for k in inputs})))
            logits.append(out["logits"])
            if "logits_to_keep" in inputs:  # the runtime's prompt path: last position only, same numbers
                feeds["logits_to_keep"] = np.array([1], dtype=np.int64)
                last = session.run(["logits"], {k: feeds[k] for k in inputs})[0]
                _check(diffs, "logits_to_keep=1", last, out["logits"][:, -1:], np.ones(last.shape, dtype=bool))
            past = {n: out[present_name(n)] for pair in layers for n in pair}
            start = end
        _check(diffs, "logits", np.concatenate(logits, axis=1), ref, mask.astype(bool))
        cases.append({"case": f"prompts{list(lengths)}+chunks{list(chunks)}", "max_abs_diff": diffs})
    return summarize(cases, atol, setting=" (with a KV cache)")


def validate_seq2seq(model: Any, paths: dict[str, Path], vocab: int, pad: int, start_id: int, atol: float,
                     seed: int = 0) -> dict[str, Any]:
    """Each case's batch decoded step by step with the cache against the model on whole sequences; then rows at
    different steps in one call, as the continuous batch runs them (``_staggered``), when the graph can."""
    import torch

    enc = create_session(paths[ENCODER])
    first = create_session(paths[DECODER])
    step = create_session(paths[DECODER_WITH_PAST])
    rng = np.random.default_rng(seed)
    cases = []
    for lengths, steps in SEQ2SEQ_CASES:
        src, src_mask, _, _ = _left_padded(rng, lengths, 0, vocab, pad)
        src, src_mask = src[:, ::-1].copy(), src_mask[:, ::-1].copy()  # sources are right-padded
        dec = rng.integers(4, vocab, size=(len(lengths), steps + 1), dtype=np.int64)
        dec[:, 0] = start_id
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(src), attention_mask=torch.from_numpy(src_mask),
                        decoder_input_ids=torch.from_numpy(dec), use_cache=False)
        hidden = enc.run(None, {"input_ids": src, "attention_mask": src_mask})[0]
        diffs: dict[str, float] = {}
        keep = np.broadcast_to(src_mask.astype(bool)[..., None], hidden.shape)
        _check(diffs, "encoder_last_hidden_state", hidden, ref.encoder_last_hidden_state.numpy(), keep)
        logits, _ = _run_seq2seq_decoder(first, step, hidden, src_mask, dec)
        _check(diffs, "logits", logits, ref.logits.float().numpy(), np.ones(logits.shape, dtype=bool))
        cases.append({"case": f"sources{list(lengths)}+steps{steps}", "max_abs_diff": diffs})
    if "decoder_attention_mask" in {i.name for i in step.get_inputs()}:
        cases.append(_staggered(model, enc, first, step, rng, vocab, start_id))
    return summarize(cases, atol, setting=" (with a KV cache)")


STAGGERED = ((5, 3), (9, 7), (2, 1))  # (source length, decoder tokens before the batched step) per row


def _staggered(model: Any, enc: Any, first: Any, step: Any, rng: np.random.Generator, vocab: int,
               start_id: int) -> dict[str, Any]:
    """Rows decoded alone to different lengths, then one batched step: each row right-aligned in the self- and
    cross-attention caches behind masked columns, with its own positions; its logits against the model on that row
    alone, whole, without a cache."""
    import torch

    rows = []
    for n, t in STAGGERED:
        src = rng.integers(4, vocab, size=(1, n), dtype=np.int64)
        dec = rng.integers(4, vocab, size=(1, t + 1), dtype=np.int64)
        dec[0, 0] = start_id
        ones = np.ones_like(src)
        hidden = enc.run(None, {"input_ids": src, "attention_mask": ones})[0]
        _, cache = _run_seq2seq_decoder(first, step, hidden, ones, dec[:, :t])
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(src), attention_mask=torch.from_numpy(ones),
                        decoder_input_ids=torch.from_numpy(dec), use_cache=False).logits[:, -1].float().numpy()
        rows.append((n, t, dec[0, t], cache, ref))
    width, source = max(t for _, t, *_ in rows), max(n for n, *_ in rows)
    feeds: dict[str, np.ndarray] = {"input_ids": np.array([[tok] for _, _, tok, *_ in rows], dtype=np.int64),
                                    "encoder_attention_mask": np.zeros((len(rows), source), dtype=np.int64),
                                    "decoder_attention_mask": np.zeros((len(rows), width + 1), dtype=np.int64),
                                    "decoder_position_ids": np.array([[t] for _, t, *_ in rows], dtype=np.int64)}
    for r, (n, t, _, cache, _) in enumerate(rows):
        feeds["encoder_attention_mask"][r, source - n:] = 1
        feeds["decoder_attention_mask"][r, width - t:] = 1
        for name, value in cache.items():
            cols = source if ".encoder." in name else width
            batch = feeds.setdefault(name, np.zeros((len(rows), value.shape[1], cols, value.shape[3]), value.dtype))
            batch[r, :, cols - value.shape[2]:] = value[0]
    names = [i.name for i in step.get_inputs()]
    logits = step.run(["logits"], {k: feeds[k] for k in names})[0][:, -1]
    diffs: dict[str, float] = {}
    _check(diffs, "logits_staggered_rows", logits, np.concatenate([ref for *_, ref in rows]),
           np.ones(logits.shape, dtype=bool))
    return {"case": f"staggered rows (source, steps) {list(STAGGERED)}", "max_abs_diff": diffs}


def _run_seq2seq_decoder(first: Any, step: Any, hidden: np.ndarray, src_mask: np.ndarray,
                         dec: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits of every decoder position (first step, then one token per call with the cache) and the cache
    after the last one (past names → arrays)."""
    names = [o.name for o in first.get_outputs()]
    out = dict(zip(names, first.run(None, {"input_ids": dec[:, :1], "encoder_hidden_states": hidden,
                                           "encoder_attention_mask": src_mask})))
    logits = [out["logits"]]
    step_inputs = [i.name for i in step.get_inputs()]
    cache = {n: out[present_name(n)] for n in step_inputs if n.startswith("past_key_values.")}
    step_names = [o.name for o in step.get_outputs()]
    batch = len(dec)
    for t in range(1, dec.shape[1]):
        feeds = {"input_ids": dec[:, t : t + 1], "encoder_attention_mask": src_mask,
                 "decoder_attention_mask": np.ones((batch, t + 1), dtype=np.int64),
                 "decoder_position_ids": np.full((batch, 1), t, dtype=np.int64), **cache}
        out = dict(zip(step_names, step.run(None, {k: feeds[k] for k in step_inputs})))
        logits.append(out["logits"])
        cache.update({n: out[present_name(n)] for n in cache if ".decoder." in n})  # cross-attention cache is fixed
    return np.concatenate(logits, axis=1), cache


def validate_decoder_slots(model: Any, path: Path, layout: dict[str, Any], vocab: int, atol: float,
                           seed: int = 0) -> dict[str, Any]:
    """The slot graph run the way runtime/generation/slots.py runs it (its cache, bound in place), against the model
    on whole sequences: every row's prompt in one right-padded call, then each chunk — one token for every row in
    one call, longer chunks row by row (GroupQueryAttention continues a prompt for one row at a time)."""
    import torch

    from onnxformer.runtime.generation.slots import SlotCache, run_slots

    session = create_session(path)
    rng = np.random.default_rng(seed)
    cases = []
    for lengths, chunks in DECODER_CASES:
        total = max(lengths) + sum(chunks)
        ids = rng.integers(4, vocab, size=(len(lengths), total), dtype=np.int64)
        with torch.inference_mode():
            ref = model(input_ids=torch.from_numpy(ids), use_cache=False).logits.float().numpy()
        cache = SlotCache(session, layout, len(lengths) * total)
        for n in lengths:
            cache.add(n + sum(chunks))
        width = max(lengths)
        prompt = np.zeros((len(lengths), width), dtype=np.int64)
        for r, n in enumerate(lengths):
            prompt[r, :n] = ids[r, :n]
        got = run_slots(session, cache, 0, prompt, np.tile(np.arange(width), (len(lengths), 1)), list(lengths), keep=0)
        diffs = {"prompt logits": max(float(np.abs(got[r, :n] - ref[r, :n]).max()) for r, n in enumerate(lengths))}
        done = list(lengths)
        for chunk in chunks:
            worst = 0.0
            if chunk == 1:
                cols = np.asarray(done)[:, None]
                got = run_slots(session, cache, 0, np.take_along_axis(ids, cols, 1), cols, [n + 1 for n in done], 0)
                worst = max(float(np.abs(got[r, 0] - ref[r, n]).max()) for r, n in enumerate(done))
            else:
                for r, n in enumerate(done):
                    got = run_slots(session, cache, r, ids[r:r + 1, n:n + chunk], np.arange(n, n + chunk)[None],
                                    [n + chunk], 0)
                    worst = max(worst, float(np.abs(got[0] - ref[r, n:n + chunk]).max()))
            done = [n + chunk for n in done]
            name = "decode logits" if chunk == 1 else "prompt chunk logits"
            diffs[name] = max(diffs.get(name, 0.0), worst)
        cases.append({"case": f"prompts{list(lengths)}+chunks{list(chunks)}", "max_abs_diff": diffs})
    return summarize(cases, atol, setting=" (slot graph, cache in place)")
