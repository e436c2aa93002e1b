"""Issue 13's encoder-side families on the dynamo export path, against transformers and sentence-transformers:
ModernBERT (global + sliding-window attention, rotary), DeBERTa-v3-shaped DeBERTa-v2 (relative attention), and
a Qwen3 decoder used as a sentence embedder with last-token pooling (Qwen3-Embedding)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TASK_CLASSES, manifest_json

from onnxformer.artifact.families import DECODER, ENCODER, Family, get_family, register
from onnxformer.errors import CheckpointError
from onnxformer.runtime import Model
from onnxformer.runtime.pooling import pool

# Lengths from 3 to ~40 tokens in one batch: heavy padding, and past ModernBERT's tiny sliding window (5).
TEXTS = [
    "Hi.",
    "A sentence of middling length, long enough to pass the local attention window.",
    " ".join(["Padding must not leak into the real tokens of the short rows."] * 3),
]
PAIRS = [("modernbert", "feature-extraction"), ("modernbert", "text-classification"),
         ("modernbert", "token-classification"), ("deberta-v2", "text-classification"),
         ("deberta-v2", "token-classification")]
OUTPUT = {"feature-extraction": "last_hidden_state", "text-classification": "logits", "token-classification": "logits"}


def transformers_outputs(ckpt: Path, task: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The task's first output from transformers on right-padded ``texts``, and the attention mask."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    model = getattr(transformers, TASK_CLASSES[task]).from_pretrained(ckpt).eval()
    batch = AutoTokenizer.from_pretrained(ckpt)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out[0].numpy(), batch["attention_mask"].numpy()


@pytest.mark.parametrize("family,task", PAIRS)
def test_runtime_matches_transformers(family, task, tiny_checkpoint, tiny_artifact):
    manifest = manifest_json(tiny_artifact(family, task))
    assert manifest["validation"]["passed"] and manifest["variants"]["fp32"]["made_by"]["dynamo"] is True
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]  # neither has token types
    model = Model.load(tiny_artifact(family, task))
    feeds = model.tokenizer.encode(TEXTS).feeds
    got = model.run(feeds)[OUTPUT[task]]
    ref, mask = transformers_outputs(tiny_checkpoint(family, task), task, TEXTS)
    assert feeds["input_ids"].shape[1] > 30 and mask.sum(1).min() < 10  # long and short rows share the batch
    assert got.shape == ref.shape
    real = mask.astype(bool) if got.ndim == 3 else slice(None)  # padded positions are undefined in both
    np.testing.assert_allclose(got[real], ref[real], rtol=1e-4, atol=1e-5)
    assert np.ptp(ref[real], axis=0).max() > 0.1  # outputs that vary with the input, not near-constant ones


def test_modernbert_uses_both_attention_kinds(tiny_checkpoint):
    """The fixture really mixes a global layer with a sliding one narrower than the test's texts."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_checkpoint("modernbert", "feature-extraction"))
    assert cfg.layer_types == ["full_attention", "sliding_attention"] and cfg.sliding_window == 4


def test_deberta_fixture_is_v3_shaped(tiny_checkpoint):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_checkpoint("deberta-v2", "text-classification"))
    assert cfg.relative_attention and cfg.pos_att_type == ["p2c", "c2p"] and not cfg.position_biased_input


# --- Qwen3-Embedding style: a decoder, AutoModel, sentence-transformers' lasttoken + Normalize -----------------
QUERY_PROMPT = "Instruct: find passages that answer the question\nQuery: "
EMBED_TEXTS = ["Hi.", "A sentence of middling length, for the middle row.",
               "The longest row: padding must not leak into the real tokens of the short rows, on either side."]


def make_st_embedder(directory: Path) -> Path:
    """A tiny Qwen3 embedder as Qwen3-Embedding ships: a byte-level BPE tokenizer that appends the end-of-text
    token and pads on the left, and a sentence-transformers config in the legacy format (``pooling_mode_lasttoken``)."""
    from conftest import make_tiny_checkpoint
    from transformers import PreTrainedTokenizerFast

    from onnxformer.export.generative_random import train_tokenizer

    ckpt = make_tiny_checkpoint(directory, "qwen3", "feature-extraction")
    PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(append_eos=True), pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>", padding_side="left", model_max_length=128,
                            model_input_names=["input_ids", "attention_mask"]).save_pretrained(ckpt)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
               "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True}
    (ckpt / "modules.json").write_text(json.dumps(modules))
    (ckpt / "1_Pooling").mkdir()
    (ckpt / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (ckpt / "2_Normalize").mkdir()
    (ckpt / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 120, "do_lower_case": False}))
    (ckpt / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": QUERY_PROMPT, "document": ""}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}))
    return ckpt


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, artifact) of a tiny Qwen3 embedder, exported with no task given."""
    from onnxformer.export import export_checkpoint

    root = tmp_path_factory.mktemp("qwen3-embedder")
    ckpt = make_st_embedder(root / "ckpt")
    result = export_checkpoint(str(ckpt), root / "artifact")
    assert result.task_inferred and result.manifest.task == "feature-extraction"
    return ckpt, root / "artifact"


def test_embedder_manifest(embedder):
    m = manifest_json(embedder[1])
    assert m["architecture"]["model_type"] == "qwen3" and m["validation"]["passed"]
    assert (m["postprocess"]["pooling"], m["postprocess"]["normalize"]) == ("last", True)
    assert m["postprocess"]["prompts"] == {"query": QUERY_PROMPT}  # ST's empty "document" prompt is a placeholder
    assert m["tokenizer"]["max_length"] == 120  # sentence_bert_config.json, under the 128 positions
    assert [o["name"] for o in m["outputs"]] == ["last_hidden_state"]  # no KV cache in an embedding graph


@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_embedder_matches_sentence_transformers(embedder, prompt_name):
    """ST pads on the left (the checkpoint's tokenizer), the runtime on the right: the last real token is the
    same, and rotary positions are relative, so the embeddings agree."""
    from sentence_transformers import SentenceTransformer

    ckpt, art = embedder
    st = SentenceTransformer(str(ckpt), device="cpu")
    assert st.tokenizer.padding_side == "left"
    ids = st.tokenizer(EMBED_TEXTS)["input_ids"]
    assert min(map(len, ids)) < 8 and max(map(len, ids)) > 40  # one batch, very different lengths
    assert all(row[-1] == st.tokenizer.eos_token_id for row in ids)  # the pooled token is the appended end-of-text
    ref = st.encode(EMBED_TEXTS, prompt_name=prompt_name, batch_size=len(EMBED_TEXTS))
    got = Model.load(art).embed(EMBED_TEXTS, prompt_name=prompt_name)
    assert got.shape == ref.shape == (len(EMBED_TEXTS), 32)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    one_by_one = np.stack([st.encode([t], prompt_name=prompt_name)[0] for t in EMBED_TEXTS])
    np.testing.assert_allclose(ref, one_by_one, atol=1e-5)  # padding did not change ST's own answer either


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("mode,st_mode", [("last", "lasttoken"), ("cls", "cls"), ("mean", "mean")])
def test_pooling_matches_sentence_transformers_on_either_padding_side(side, mode, st_mode):
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(0)
    states = rng.standard_normal((3, 6, 4)).astype(np.float32)
    lengths = [6, 2, 4]
    mask = np.zeros((3, 6), dtype=np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    if side == "left":
        mask = mask[:, ::-1].copy()
    ref = Pooling(4, st_mode)({"token_embeddings": torch.from_numpy(states),
                               "attention_mask": torch.from_numpy(mask)})["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool(states, mask, mode), ref, atol=1e-6)


def test_qwen3_dispatch():
    """qwen3 is one family: generation by default, feature-extraction for a sentence-transformers checkpoint or
    when asked; no classification heads."""
    from onnxformer.export.detect import check_architecture, generative_task

    family = get_family("qwen3")
    assert family.kind == DECODER and family.tasks == ("text-generation", "feature-extraction")
    assert generative_task("qwen3", None) == "text-generation"
    assert generative_task("qwen3", None, is_sentence_transformer=True) is None
    assert generative_task("qwen3", "feature-extraction") is None
    assert check_architecture("qwen3", "feature-extraction") is family
    with pytest.raises(CheckpointError, match=r"^'qwen3' checkpoints export text-generation, feature-extraction, "
                                              r"not text-classification; families that export text-classification: "
                                              r"albert, bert, "):
        check_architecture("qwen3", "text-classification")
    assert generative_task("llama", None, is_sentence_transformer=True) == "text-generation"  # not an embedder


def test_only_decoders_embed():
    with pytest.raises(ValueError, match="only a decoder family can be an embedder"):
        register(Family("bert-embedder", ENCODER, embedder=True))


# --- fp32-opt: what onnxscript's fusions (+ ORT's "bert" optimizer for DeBERTa) make of each family
# (ModernBERT/Qwen3: rotary sits between the projections and SDPA, so replace_sdpa_by_mha makes the MHA) -------------
FUSED = {
    "deberta-v2": {"BiasGelu": 2, "FusedMatMul": 4, "Gelu": 1, "LayerNormalization": 1, "SkipLayerNormalization": 4},
    "modernbert": {"Gelu": 3, "LayerNormalization": 6, "MultiHeadAttention": 2},  # bias-free norms: no Skip fusion
    "qwen3": {"MultiHeadAttention": 2, "SimplifiedLayerNormalization": 5, "SkipSimplifiedLayerNormalization": 4},
}


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert", "qwen3"])
def test_fused_graph(family, tiny_artifact, embedder, copy_artifact):
    from onnxformer.quantize.pipeline import optimize_artifact

    art = copy_artifact(embedder[1] if family == "qwen3" else tiny_artifact(family, "text-classification"))
    record = optimize_artifact(art).record
    assert record.made_by["fused_ops"] == FUSED[family]
    assert record.made_by["model_type"] == get_family(family).optimizer_model_type
    assert record.fidelity.get("min_cosine", 1.0) > 0.9999 and record.fidelity.get("argmax_agreement", 1.0) == 1.0


def test_smoothing_shares_one_mul_between_q_k_and_v(embedder, copy_artifact, tmp_path):
    """MultiHeadAttention graphs keep Q, K and V as three MatMuls of one activation: smoothing gives them one scale
    and one Mul (so one dynamic quantization), not three."""
    import onnx

    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.quantize import int8, smoothing
    from onnxformer.quantize.fidelity import evaluation_feeds
    from onnxformer.quantize.pipeline import optimize_artifact
    from onnxformer.quantize.texts import calibration_texts

    art = copy_artifact(embedder[1])  # Qwen3: q_proj, k_proj, v_proj read one normalized activation
    optimize_artifact(art)
    source = art / "fp32-opt" / "model.onnx"
    nodes = int8.candidate_nodes(source, int8.DYNAMIC_OPS)
    feeds = evaluation_feeds(art, load_manifest(art), calibration_texts()[:8])
    path, plan = smoothing.smooth(source, nodes, feeds, tmp_path / "s" / "model.onnx", min_gain=0.0)
    original = onnx.load(str(source)).graph
    readers: dict[str, set[str]] = {}
    for n in original.node:
        if n.name in nodes:
            readers.setdefault(n.input[0], set()).add(n.name)
    qkv = [g for g in readers.values() if len(g) == 3]
    assert len(qkv) == 2  # one per layer
    graph = onnx.load(str(path)).graph
    muls = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("_smooth")]
    for group in qkv:
        assert len({plan.alphas[n] for n in group}) == 1 and all(n in plan.scales for n in group)
        feeding = [m for m in muls if {n.name for n in graph.node if m.output[0] in n.input} == group]
        assert len(feeding) == 1
