"""Seq2seq graphs from torch.onnx.export (dynamo): the runtime's I/O contract, and parity with PyTorch
(greedy tokens identical to transformers' generate, every step's logits close) on raw ONNX Runtime sessions."""
from __future__ import annotations

import numpy as np
import pytest

from onnxformer.errors import ExportError

SEQ2SEQ = ("t5", "bart", "marian")
PROMPTS = ["The quick brown fox", "Hi", "ONNX Runtime runs the exported graph; PyTorch is the reference"]
GRAPHS = {"encoder": "encoder_model.onnx", "decoder": "decoder_model.onnx",
          "decoder_with_past": "decoder_with_past_model.onnx"}
LAYERS = 2  # the tiny checkpoints'


def _cache(prefix: str, kinds: tuple[str, ...]) -> list[str]:
    return [f"{prefix}.{i}.{k}.{p}" for i in range(LAYERS) for k in kinds for p in ("key", "value")]


def _sessions(artifact) -> dict:
    import onnxruntime as ort

    return {role: ort.InferenceSession(str(artifact / "fp32" / f), providers=["CPUExecutionProvider"])
            for role, f in GRAPHS.items()}


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_graphs_keep_the_runtime_contract(family, gen_artifact):
    from conftest import manifest_json

    s = _sessions(gen_artifact(family))
    io = {role: ([(i.name, i.shape) for i in x.get_inputs()], [o.name for o in x.get_outputs()])
          for role, x in s.items()}
    ids = ["batch_size", "encoder_sequence_length"]
    assert io["encoder"] == ([("input_ids", ids), ("attention_mask", ids)], ["last_hidden_state"])
    assert io["decoder"][0] == [("input_ids", ["batch_size", "decoder_sequence_length"]),
                                ("encoder_attention_mask", ids), ("encoder_hidden_states", [*ids, 32])]
    assert io["decoder"][1] == ["logits", *_cache("present", ("decoder", "encoder"))]
    past = dict(io["decoder_with_past"][0])
    positions = ["decoder_position_ids"] if family != "t5" else []  # T5's relative bias needs none
    assert list(past) == ["input_ids", "encoder_attention_mask", "decoder_attention_mask", *positions,
                          *_cache("past_key_values", ("decoder", "encoder"))]
    assert past["decoder_attention_mask"] == ["batch_size", "total_decoder_sequence_length"]
    assert past["past_key_values.1.decoder.value"] == ["batch_size", 4, "past_decoder_sequence_length", 8]
    assert past["past_key_values.1.encoder.key"] == ["batch_size", 4, "encoder_sequence_length", 8]
    assert io["decoder_with_past"][1] == ["logits", *_cache("present", ("decoder",))]
    manifest = manifest_json(gen_artifact(family))
    made_by = manifest["variants"]["fp32"]["made_by"]
    assert made_by["tool"] == "torch.onnx.export" and made_by["dynamo"] is True
    # Rows at different steps in one call (the continuous batch's layout) were checked against PyTorch at export.
    worst = manifest["validation"]["max_abs_diff"]
    assert 0 < worst["logits_staggered_rows"] <= manifest["validation"]["atol"]


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_greedy_and_logits_match_pytorch(family, gen_checkpoint, gen_artifact):
    """Batch 3 of right-padded sources (shapes the export never traced); ONNX steps with its own cache."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    ckpt, new = gen_checkpoint(family), 16
    tok = AutoTokenizer.from_pretrained(ckpt, padding_side="right")
    model = AutoModelForSeq2SeqLM.from_pretrained(ckpt).eval()
    enc = tok(PROMPTS, return_tensors="np", padding=True)
    with torch.inference_mode():
        expected = model.generate(input_ids=torch.from_numpy(enc.input_ids),
                                  attention_mask=torch.from_numpy(enc.attention_mask), do_sample=False,
                                  max_new_tokens=new).numpy()
    tokens, logits = _greedy(_sessions(gen_artifact(family)), enc.input_ids, enc.attention_mask, model, new)
    np.testing.assert_array_equal(tokens, expected)
    assert len({tuple(row) for row in tokens}) == len(PROMPTS)  # rows differ: a real batch
    with torch.inference_mode():  # teacher-forced on the generated tokens, no cache
        ref = model(input_ids=torch.from_numpy(enc.input_ids), attention_mask=torch.from_numpy(enc.attention_mask),
                    decoder_input_ids=torch.from_numpy(tokens[:, :-1]), use_cache=False).logits.numpy()
    assert np.abs(logits - ref).max() < 1e-4


def _greedy(s: dict, src: np.ndarray, mask: np.ndarray, model, new: int) -> tuple[np.ndarray, np.ndarray]:
    """transformers' greedy search on the three graphs: finished rows get pad, forced eos on the last step."""
    gen = model.generation_config
    hidden = s["encoder"].run(None, {"input_ids": src, "attention_mask": mask})[0]
    tokens = np.full((len(src), 1), gen.decoder_start_token_id, dtype=np.int64)
    names = [o.name for o in s["decoder"].get_outputs()]
    out = dict(zip(names, s["decoder"].run(None, {"input_ids": tokens, "encoder_attention_mask": mask,
                                                  "encoder_hidden_states": hidden})))
    cache = {n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if n != "logits"}
    step_names = [o.name for o in s["decoder_with_past"].get_outputs()]
    done, logits = np.zeros(len(src), dtype=bool), [out["logits"]]
    for t in range(new):
        nxt = logits[-1][:, -1].argmax(-1)
        if t == new - 1 and gen.forced_eos_token_id is not None:
            nxt[:] = gen.forced_eos_token_id
        nxt = np.where(done, gen.pad_token_id, nxt)
        done |= nxt == gen.eos_token_id
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        if t == new - 1 or done.all():
            break
        feeds = {"input_ids": tokens[:, -1:], "encoder_attention_mask": mask, **cache,
                 "decoder_attention_mask": np.ones((len(src), tokens.shape[1]), dtype=np.int64),
                 "decoder_position_ids": np.full((len(src), 1), tokens.shape[1] - 1, dtype=np.int64)}
        step_inputs = [i.name for i in s["decoder_with_past"].get_inputs()]
        out = dict(zip(step_names, s["decoder_with_past"].run(None, {k: feeds[k] for k in step_inputs})))
        logits.append(out["logits"])
        cache.update({n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if n != "logits"})
    return tokens, np.concatenate(logits, axis=1)


def test_an_unexportable_model_fails_with_one_line(gen_checkpoint, tmp_path, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    from onnxformer.export.seq2seq_graph import export_seq2seq_graphs

    model = AutoModelForSeq2SeqLM.from_pretrained(gen_checkpoint("t5")).eval()
    encoder = model.get_encoder()
    forward = encoder.forward

    def data_dependent(input_ids, attention_mask=None, **kw):  # branches on a value: torch.export refuses it
        if bool((input_ids > 100).any()):
            input_ids = input_ids - 1
        return forward(input_ids=input_ids, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(encoder, "forward", data_dependent)
    with pytest.raises(ExportError) as e:
        export_seq2seq_graphs(model, tmp_path / "fp32", None)
    message = str(e.value)
    assert message.startswith("torch.onnx.export (dynamo=True) could not export the T5ForConditionalGeneration "
                              "encoder_model.onnx: ")
    assert "\n" not in message and "data-dependent" in message.lower()
    assert not list((tmp_path / "fp32").glob("*.onnx"))  # nothing half-written left behind
