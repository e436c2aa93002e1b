"""Decoder families through torch.onnx's dynamo exporter: Qwen3, Phi-3 and Gemma 3 text validate against PyTorch
and generate greedily token for token like transformers; sliding windows (Mistral, Gemma 3) are enforced."""
from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

NEW_FAMILIES = ("qwen3", "phi3", "gemma3_text")
PROMPTS = ["The quick brown fox", "Hi", "ONNX Runtime runs the exported graph; PyTorch is the reference"]


def test_every_registered_decoder_has_a_tiny_config():
    from onnxformer.artifact.families import DECODER, names
    from onnxformer.export.generative_random import tiny_config

    assert set(NEW_FAMILIES) <= set(names(DECODER))
    for family in names(DECODER):
        assert tiny_config(family, 384).model_type == family


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_export_validates_and_records_the_dynamo_exporter(family, gen_artifact):
    from conftest import manifest_json

    m = manifest_json(gen_artifact(family))
    assert m["validation"]["passed"] and len(m["validation"]["cases"]) == 3
    assert max(m["validation"]["max_abs_diff"].values()) < 1e-4
    assert m["validation"]["max_abs_diff"]["logits_to_keep=1"] == 0.0
    cache = m["generation"]["cache"]
    assert (cache["num_layers"], cache["num_kv_heads"], cache["head_size"]) == (2, 2, 8)
    assert m["generation"]["logits_to_keep"] and m["generation"]["position_ids"]
    made_by = m["variants"]["fp32"]["made_by"]
    assert made_by == {"tool": "torch.onnx.export", "dynamo": True, "opset": m["opset"], "requested_opset": None,
                       "torch": metadata.version("torch"), "transformers": metadata.version("transformers"),
                       "onnxscript": metadata.version("onnxscript")}


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_greedy_is_token_identical_to_transformers(family, gen_checkpoint, gen_artifact):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from onnxformer.runtime.generation import Generator

    ckpt = gen_checkpoint(family)
    tok = AutoTokenizer.from_pretrained(ckpt, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=24)
    expected = out[:, enc.input_ids.shape[1]:].tolist()
    got = Generator.load(gen_artifact(family)).generate_ids(PROMPTS, max_new_tokens=24)
    for row, ids in zip(expected, got):
        assert ids == row[: len(ids)]
        assert all(t == tok.pad_token_id for t in row[len(ids):])  # transformers pads rows after their eos
    assert len({tuple(ids) for ids in got}) == len(PROMPTS)  # a real batch, not one row copied


@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_sliding_window_is_exported_not_dropped(family, gen_checkpoint, gen_artifact):
    """A sequence twice the window: the graph agrees with the windowed model and not with full attention."""
    import torch
    from transformers import AutoModelForCausalLM

    from onnxformer.runtime.session import create_session

    ckpt = gen_checkpoint(family)
    windowed = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    window = windowed.config.sliding_window
    full = AutoModelForCausalLM.from_pretrained(ckpt, sliding_window=1024).eval()
    session = create_session(gen_artifact(family) / "fp32" / "model.onnx")
    ids = np.random.default_rng(0).integers(4, windowed.config.vocab_size, size=(1, 2 * window), dtype=np.int64)
    positions = np.arange(ids.shape[1])[None]
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": positions,
             "logits_to_keep": np.array([0], dtype=np.int64)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    got = session.run(["logits"], feeds)[0]
    with torch.inference_mode():
        refs = [m(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(positions)).logits.numpy()
                for m in (windowed, full)]
    np.testing.assert_allclose(got, refs[0], atol=1e-4)
    assert np.abs(got[:, window:] - refs[1][:, window:]).max() > 1e-2  # beyond the window, full attention differs


def test_a_bfloat16_checkpoint_exports_a_float32_reference(tmp_path):
    """transformers 5 loads a checkpoint in its own dtype by default; the fp32 variant must still be fp32."""
    import torch
    from conftest import manifest_json
    from transformers import AutoModelForCausalLM

    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint

    ckpt = make_generative_checkpoint(tmp_path / "ckpt", "qwen3")
    AutoModelForCausalLM.from_pretrained(ckpt).to(torch.bfloat16).save_pretrained(ckpt)
    assert AutoModelForCausalLM.from_pretrained(ckpt).dtype == torch.bfloat16  # the default would export bf16
    export_checkpoint(str(ckpt), tmp_path / "art")
    m = manifest_json(tmp_path / "art")
    assert m["generation"]["cache"]["dtype"] == "float32" and m["variants"]["fp32"]["cache_dtype"] == "float32"
    assert m["validation"]["passed"]
