"""Generation: export + validation per family, greedy parity with transformers, streaming, stops, bad input."""
from __future__ import annotations

import subprocess
import sys
from typing import Callable

import numpy as np
import pytest

from onnxformer.errors import CheckpointError, InputError

DECODERS = ("gpt2", "llama", "qwen2", "mistral")
SEQ2SEQ = ("t5", "bart", "marian")
PROMPTS = ["The quick brown fox", "Hi", "ONNX Runtime runs the exported graph; PyTorch is the reference"]


@pytest.fixture(scope="session")
def generator(gen_artifact) -> Callable[[str], object]:
    from onnxformer.runtime.generation import Generator

    cache: dict[str, Generator] = {}

    def make(family: str) -> Generator:
        if family not in cache:
            cache[family] = Generator.load(gen_artifact(family))
        return cache[family]

    return make


@pytest.mark.parametrize("family", DECODERS + SEQ2SEQ)
def test_export_records_cache_layout_and_validates(family, gen_artifact):
    from conftest import manifest_json

    m = manifest_json(gen_artifact(family))
    gen = m["generation"]
    seq2seq = family in SEQ2SEQ
    assert m["task"] == ("text2text-generation" if seq2seq else "text-generation")
    assert gen["kind"] == ("seq2seq" if seq2seq else "decoder")
    cache = gen["cache"]
    kv_heads = 2 if family in ("llama", "qwen2", "mistral") else 4
    assert (cache["num_layers"], cache["num_heads"], cache["num_kv_heads"], cache["head_size"]) == (2, 4, kv_heads, 8)
    assert cache["dtype"] == "float32"
    infix = ".decoder" if seq2seq else ""
    assert cache["past_inputs"][1] == [f"past_key_values.1{infix}.key", f"past_key_values.1{infix}.value"]
    assert cache["present_outputs"][0] == [f"present.0{infix}.key", f"present.0{infix}.value"]
    if seq2seq:
        assert cache["cross_past_inputs"][0] == ["past_key_values.0.encoder.key", "past_key_values.0.encoder.value"]
    tokens = gen["special_tokens"]
    assert tokens["eos_token_ids"] == [2] and tokens["pad_token_id"] == 0 and tokens["bos_token_id"] == 1
    if seq2seq:
        assert tokens["decoder_start_token_id"] == (2 if family == "bart" else 0)
    assert gen["max_positions"] == 128
    assert gen["logits_to_keep"] is (not seq2seq)  # decoders compute prompt logits for the last position only
    if not seq2seq:
        assert m["validation"]["max_abs_diff"]["logits_to_keep=1"] == 0.0
    # validated on several prompt lengths, each continued with a non-empty past
    assert m["validation"]["passed"] and len(m["validation"]["cases"]) >= 2
    assert max(m["validation"]["max_abs_diff"].values()) < 1e-4
    fp32 = m["variants"]["fp32"]
    # decoders also carry the slot graph the continuous batch runs on (tests/test_slots.py)
    assert set(fp32["components"]) == ({"encoder", "decoder", "decoder_with_past"} if seq2seq
                                       else {"decoder", "decoder_slots"})
    assert all(f in fp32["files"] for f in fp32["components"].values())


@pytest.mark.parametrize("family", DECODERS + SEQ2SEQ)
def test_greedy_is_token_identical_to_transformers(family, gen_checkpoint, generator):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    seq2seq = family in SEQ2SEQ
    ckpt = gen_checkpoint(family)
    tok = AutoTokenizer.from_pretrained(ckpt, padding_side="right" if seq2seq else "left")
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(ckpt).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                             max_new_tokens=32)
    expected = (out[:, 1:] if seq2seq else out[:, enc.input_ids.shape[1]:]).tolist()
    got = generator(family).generate_ids(PROMPTS, max_new_tokens=32)
    for row, ids in zip(expected, got):
        assert ids == row[: len(ids)]
        assert all(t == tok.pad_token_id for t in row[len(ids):])  # transformers pads rows after their eos
    assert max(len(ids) for ids in got) == 32
    assert len({tuple(ids) for ids in got}) == len(PROMPTS)  # rows differ: a real batch, not one row copied
    texts = generator(family).generate(PROMPTS, max_new_tokens=32)
    assert texts == [tok.decode(ids, skip_special_tokens=True) for ids in got]


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_stream_yields_the_same_text(family, generator):
    gen = generator(family)
    pieces = list(gen.stream(PROMPTS[0], max_new_tokens=24))
    assert len(pieces) > 1
    assert "".join(pieces) == gen.generate(PROMPTS[0], max_new_tokens=24)
    sampled = dict(max_new_tokens=24, do_sample=True, temperature=0.8, top_p=0.9, seed=3)
    assert "".join(gen.stream(PROMPTS[1], **sampled)) == gen.generate(PROMPTS[1], **sampled)


@pytest.mark.parametrize("family", ["llama", "bart"])
def test_stop_sequence_ends_the_text_before_it_per_row(family, generator):
    gen = generator(family)
    full = gen.generate(PROMPTS, max_new_tokens=32)
    text = full[0]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert len(stop) == 2 and stop.strip()
    cut = text[: text.index(stop)]
    stopped = gen.generate(PROMPTS, max_new_tokens=32, stop=[stop, "\x00never"])
    assert stopped[0] == cut
    for other, before in zip(stopped[1:], full[1:]):  # per-row: other rows run on unless they contain it
        assert other == (before[: before.index(stop)] if stop in before else before)
    assert "".join(gen.stream(PROMPTS[0], max_new_tokens=32, stop=stop)) == cut


def test_sampling_is_reproducible_with_a_seed(generator):
    gen = generator("qwen2")
    opts = dict(max_new_tokens=20, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, repetition_penalty=1.2)
    a = gen.generate_ids(PROMPTS, seed=7, **opts)
    assert a == gen.generate_ids(PROMPTS, seed=7, **opts)
    assert a != gen.generate_ids(PROMPTS, seed=8, **opts)
    greedy = gen.generate_ids(PROMPTS, max_new_tokens=20)
    assert gen.generate_ids(PROMPTS, max_new_tokens=20, do_sample=True, top_k=1, seed=1) == greedy


def test_sampling_filters():
    from onnxformer.runtime.generation.sampling import penalize, top_k_filter, top_p_filter

    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))
    assert np.isfinite(top_k_filter(logits, 2)).tolist() == [[True, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    pen = penalize(np.array([[2.0, -2.0, 1.0]]), np.array([[True, True, False]]), 2.0)
    assert pen.tolist() == [[1.0, -4.0, 1.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(max_new_tokens=-3), "max_new_tokens must be an integer >= 1"),
        (dict(do_sample=True, temperature=0.0), "temperature must be > 0 when do_sample=True"),
        (dict(do_sample=True, temperature=-1.0), "temperature must be > 0 when do_sample=True"),
        (dict(top_p=0.0), "top_p must be in (0, 1]"),
        (dict(stop=[""]), "stop sequences must be non-empty strings"),
        (dict(presence_penalty=float("nan")), "presence_penalty must be a finite number"),
        (dict(logit_bias={-1: 1.0}), "logit_bias maps token ids"),
        (dict(logit_bias={10 ** 6: 1.0}), "logit_bias names token 1000000"),
        (dict(logprobs=-1), "logprobs must be None or an integer >= 0"),
        (dict(min_tokens=-1), "min_tokens must be an integer from 0 to max_new_tokens=32"),
        (dict(max_new_tokens=4, min_tokens=5), "min_tokens must be an integer from 0 to max_new_tokens=4"),
        (dict(ignore_eos=True), "ignore_eos=True needs an explicit max_new_tokens"),
        (dict(ignore_eos=1, max_new_tokens=3), "ignore_eos must be true or false"),
    ],
)
def test_bad_options_fail_clearly(kwargs, message, generator):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        generator("gpt2").generate(PROMPTS, **kwargs)


@pytest.mark.parametrize(("prompts", "message"), [([""], "item 0 is an empty string"), (["ok", "  "], "item 1"),
                                                  ([], "empty list")])
def test_empty_prompts_fail_clearly(prompts, message, generator):
    with pytest.raises(InputError, match=message):
        generator("gpt2").generate(prompts)


def test_too_long_prompt_fails_unless_truncated(generator):
    gen = generator("mistral")
    long = "The quick brown fox jumps over the lazy dog. " * 20  # well over 128 tokens
    with pytest.raises(InputError, match=r"prompt 1 has \d+ tokens, over the 96 tokens that fit with "
                                         r"max_new_tokens=32 in this model's 128 positions.*truncate=True"):
        gen.generate(["short", long], max_new_tokens=32)
    out = gen.generate_ids(["short", long], max_new_tokens=32, truncate=True)
    assert len(out) == 2 and all(out)
    with pytest.raises(InputError, match="max_new_tokens=128 leaves no room"):
        gen.generate(["short"], max_new_tokens=128)
    with pytest.raises(InputError, match="over the 128 token limit of this model's encoder"):
        generator("marian").generate([long])
    assert generator("marian").generate([long], max_new_tokens=4, truncate=True)


def test_generate_on_an_encoder_artifact_is_refused(tiny_artifact):
    from onnxformer.errors import ArtifactError
    from onnxformer.runtime.generation import Generator

    with pytest.raises(ArtifactError, match="not a generative one"):
        Generator.load(tiny_artifact("bert", "feature-extraction"))


def test_unsupported_family_for_generation_is_refused(tiny_checkpoint, tmp_path):
    from onnxformer.export import export_checkpoint

    with pytest.raises(CheckpointError, match="'bert' cannot be exported for text-generation; supported"):
        export_checkpoint(str(tiny_checkpoint("bert")), tmp_path / "out", task="text-generation")


def test_tampered_generative_artifact_is_refused(gen_artifact, copy_artifact):
    from onnxformer.errors import IntegrityError
    from onnxformer.runtime.generation import Generator

    art = copy_artifact(gen_artifact("t5"))
    with open(art / "fp32" / "decoder_with_past_model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match="decoder_with_past_model.onnx does not match the manifest"):
        Generator.load(art)


@pytest.mark.parametrize("family,graph", [("gpt2", "fp32/model.onnx"), ("t5", "fp32/decoder_with_past_model.onnx")])
def test_generator_refuses_external_data_outside_the_artifact(gen_artifact, copy_artifact, family, graph):
    """Generator.load confines every graph's external data exactly as Model.load does, before ORT opens it."""
    from conftest import externalize

    from onnxformer.errors import IntegrityError
    from onnxformer.runtime.generation import Generator

    art = copy_artifact(gen_artifact(family))
    externalize(art, graph=graph)
    assert Generator.load(art).generate("hi", max_new_tokens=2) is not None  # inside the artifact: loads
    externalize(art, rewrite="../outside.bin", graph=graph)
    with pytest.raises(IntegrityError, match=r"'\.\.' leaves the artifact directory"):
        Generator.load(art)


def test_runtime_generation_does_not_import_torch(gen_artifact):
    code = ("import sys; from onnxformer.runtime.generation import Generator; "
            f"g = Generator.load({str(gen_artifact('gpt2'))!r}); g.generate(['hi'], max_new_tokens=3); "
            "bad = [m for m in ('torch', 'transformers', 'onnx', 'optimum') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_points_generative_artifacts_to_the_generator(gen_artifact):
    from onnxformer.errors import ArtifactError
    from onnxformer.runtime import Model

    with pytest.raises(ArtifactError, match="use onnxformer.runtime.generation.Generator"):
        Model.load(gen_artifact("gpt2"))


def test_provider_resolution_skips_providers_the_variant_does_not_target(gen_artifact):
    from onnxformer.errors import ProviderError
    from onnxformer.runtime.generation import Generator

    assert Generator.load(gen_artifact("gpt2"), provider="cpu").sessions["decoder"].get_providers() == [
        "CPUExecutionProvider"]
    with pytest.raises(ProviderError):
        Generator.load(gen_artifact("gpt2"), provider="tensorrt", threads=1)


def test_cli_generate_streams_and_reports_bad_input(gen_artifact, generator, capsys):
    from onnxformer.cli import main

    art = str(gen_artifact("gpt2"))
    assert main(["generate", art, PROMPTS[0], "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == generator("gpt2").generate(PROMPTS[0], max_new_tokens=10) + "\n"
    assert main(["generate", art, "a", "b", "--sample", "--seed", "1", "--top-k", "5"]) == 0
    assert capsys.readouterr().out.count("→") == 2
    assert main(["generate", art, "a", "--sample", "--temperature", "0"]) == 1
    assert "temperature must be > 0 when do_sample=True" in capsys.readouterr().err


def test_cli_min_tokens_and_ignore_eos(gen_artifact, generator, capsys):
    from onnxformer.cli import main

    art, gen = str(gen_artifact("gpt2")), generator("gpt2")
    assert main(["generate", art, PROMPTS[0], "--max-new-tokens", "6", "--min-tokens", "6", "--ignore-eos"]) == 0
    assert capsys.readouterr().out == gen.generate(PROMPTS[0], 6, min_tokens=6, ignore_eos=True) + "\n"
    assert main(["generate", art, "a", "--ignore-eos"]) == 1
    assert capsys.readouterr().err.strip() == ("onnxformer: error: --ignore-eos needs --max-new-tokens: "
                                               "the text runs until it")
    assert main(["generate", art, "a", "--max-new-tokens", "3", "--min-tokens", "4"]) == 1
    assert "min_tokens must be an integer from 0 to max_new_tokens=3" in capsys.readouterr().err


def test_kv_cache_is_written_in_place_into_preallocated_buffers(generator):
    """ORT writes each step's present straight into our buffers (no per-token allocation), and the
    cached keys/values equal a plain run over the whole sequence."""
    from onnxformer.runtime.generation.decoder import DecoderStepper, positions_from_mask

    gen = generator("llama")
    prompts = gen.prompts.encode(PROMPTS, 100, False, "positions")
    stepper = DecoderStepper(gen.sessions["decoder"], gen.cache_layout, prompts, max_new=4)
    addresses = stepper.cache.buffer_addresses()
    tokens = stepper.first().argmax(-1)
    stepper.next(tokens)
    assert stepper.cache.buffer_addresses() == addresses and stepper.cache.length == prompts.ids.shape[1] + 1

    session = gen.sessions["decoder"]
    ids = np.concatenate([prompts.ids, tokens[:, None]], axis=1)
    mask = np.concatenate([prompts.mask, np.ones_like(tokens[:, None])], axis=1)
    empty = np.zeros((len(ids), 2, 0, 8), dtype=np.float32)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions_from_mask(mask),
             "logits_to_keep": np.array([0])}
    feeds.update({n: empty for pair in gen.cache_layout["past_inputs"] for n in pair})
    presents = session.run([n for pair in gen.cache_layout["present_outputs"] for n in pair], feeds)
    # Real positions only: no query ever attends a pad, and the exported masked softmax (finfo.min, not -inf)
    # gives a pad's own fully masked row an average over the whole sequence, so deeper pad entries vary with length.
    real = np.broadcast_to(mask.astype(bool)[:, None, :, None], presents[0].shape)
    assert not real.all()  # the batch is padded: the comparison leaves pads out, it does not miss them
    for i, expected in enumerate(presents):
        np.testing.assert_allclose(stepper.cache.host_view(i)[real], expected[real], atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "marian"])
def test_repetition_penalty_matches_transformers(family, gen_checkpoint, generator):
    """Greedy with a penalty: same processor semantics as transformers (single prompt: no pads to count)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    seq2seq = family in SEQ2SEQ
    ckpt = gen_checkpoint(family)
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(ckpt).eval()
    enc = tok([PROMPTS[2]], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                             max_new_tokens=24, repetition_penalty=1.5)
    expected = (out[0, 1:] if seq2seq else out[0, enc.input_ids.shape[1]:]).tolist()
    got = generator(family).generate_ids([PROMPTS[2]], max_new_tokens=24, repetition_penalty=1.5)[0]
    assert got == expected[: len(got)]
    assert got != generator(family).generate_ids([PROMPTS[2]], max_new_tokens=24)[0]  # the penalty did something


def test_rows_stop_independently_at_end_of_sequence_like_transformers(gen_checkpoint, gen_artifact):
    """Make a token generated mid-way by row 0 the eos: row 0 stops there, other rows run on (parity)."""
    import dataclasses

    from onnxformer.runtime.generation import Generator

    gen = Generator.load(gen_artifact("qwen2"))
    free = gen.generate_ids(PROMPTS, max_new_tokens=32)
    eos = next(t for i, t in enumerate(free[0]) if i >= 3 and t not in free[0][:i])
    gen.special = dataclasses.replace(gen.special, eos=(eos,))
    got = gen.generate_ids(PROMPTS, max_new_tokens=32)
    assert got[0] == free[0][: free[0].index(eos) + 1]
    assert any(len(row) == 32 for row in got[1:])

    _assert_transformers_greedy(gen_checkpoint("qwen2"), got, max_new_tokens=32, eos_token_id=eos)


def _assert_transformers_greedy(ckpt, got: list[list[int]], **generate_kwargs) -> None:
    """Each row of ``got`` equals transformers' greedy ``generate`` on PROMPTS (left-padded), then padding only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                             **generate_kwargs)
    for row, ids in zip(out[:, enc.input_ids.shape[1]:].tolist(), got):
        assert row[: len(ids)] == ids and all(t == tok.pad_token_id for t in row[len(ids):])


def test_min_tokens_follows_transformers_min_new_tokens_and_ignore_eos_runs_on(gen_checkpoint, gen_artifact):
    """A token row 0 generates mid-way made the eos: with min_tokens past it, greedy equals transformers'
    ``min_new_tokens`` (eos logits at -inf until then); with ignore_eos every row runs to max_new_tokens as if
    there were no eos (the eos an ordinary token)."""
    import dataclasses

    from onnxformer.runtime.generation import Generator

    gen = Generator.load(gen_artifact("qwen2"))
    free = gen.generate_ids(PROMPTS, max_new_tokens=16)
    at = next(i for i, t in enumerate(free[0]) if i >= 2 and t not in free[0][:i])
    eos = free[0][at]
    gen.special = dataclasses.replace(gen.special, eos=(eos,))
    assert gen.generate_ids(PROMPTS, max_new_tokens=16)[0] == free[0][: at + 1]  # it does stop there
    got = gen.generate_ids(PROMPTS, max_new_tokens=16, min_tokens=at + 2)
    assert len(got[0]) > at + 1 and eos not in got[0][: at + 2]

    _assert_transformers_greedy(gen_checkpoint("qwen2"), got, max_new_tokens=16, eos_token_id=eos,
                                min_new_tokens=at + 2)

    run = gen.start(PROMPTS, 16, ignore_eos=True)
    run.finish()
    assert [s.ids for s in run.streams] == free and {c.finish_reason for c in run.completions()} == {"length"}


def test_min_tokens_holds_off_eos_and_stop_strings(generator):
    """vLLM's semantics: before min_tokens new tokens neither the end-of-sequence token (its logits masked: the next
    best is chosen, as a -100 logit bias would) nor a stop string ends the text."""
    gen = generator("gpt2")
    eos_first = {t: 100.0 for t in gen.special.eos}  # eos is the first token unless masked
    assert gen.generate_ids([PROMPTS[0]], 8, logit_bias=eos_first) == [[gen.special.eos[0]]]
    ids = gen.generate_ids([PROMPTS[0]], 8, logit_bias=eos_first, min_tokens=4)[0]
    banned = gen.generate_ids([PROMPTS[0]], 4, logit_bias={t: -100.0 for t in gen.special.eos})[0]
    assert ids == banned + [gen.special.eos[0]]
    run = gen.start(PROMPTS[0], 8, logit_bias=eos_first, ignore_eos=True)
    run.finish()
    assert run.streams[0].ids == [gen.special.eos[0]] * 8 and run.completions()[0].finish_reason == "length"

    text = gen.generate(PROMPTS[0], 6)
    stop = text[:2]
    assert gen.generate(PROMPTS[0], 6, stop=stop) == ""
    assert gen.generate(PROMPTS[0], 6, stop=stop, min_tokens=6) == text  # not looked for before min_tokens
    assert "".join(gen.stream(PROMPTS[0], 6, stop=stop, min_tokens=6)) == text


def test_stream_checks_its_input_at_the_call(generator):
    gen = generator("gpt2")
    with pytest.raises(InputError, match="max_new_tokens must be an integer >= 1"):
        gen.stream("hello", max_new_tokens=0)
    with pytest.raises(InputError, match="item 0 is an empty string"):
        gen.stream("")
    with pytest.raises(InputError, match="stream\\(\\) takes one prompt string"):
        gen.stream(["a", "b"])
