"""Every supported encoder family × task exports and validates against PyTorch on new shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import manifest_json

from onnxformer.artifact.manifest import load_manifest, verify_variant
from onnxformer.export import ENCODER_FAMILIES, export_checkpoint

TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering")
TASK_OUTPUTS = {
    "feature-extraction": ["last_hidden_state"],
    "text-classification": ["logits"],
    "token-classification": ["logits"],
    "question-answering": ["start_logits", "end_logits"],
}


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_family_exports_and_validates(family, tiny_artifact):
    out = tiny_artifact(family, "feature-extraction")
    m = manifest_json(out)
    assert m["architecture"]["model_type"] == family
    assert m["validation"]["passed"] is True
    assert len(m["validation"]["cases"]) >= 3
    # validated on shapes other than optimum's trace shape (2 × 16)
    shapes = {tuple(c["shape"]) for c in m["validation"]["cases"]}
    assert len(shapes) >= 2 and (2, 16) not in shapes
    assert max(m["validation"]["max_abs_diff"].values()) < 1e-4
    verify_variant(out, load_manifest(out), "fp32")


@pytest.mark.parametrize("task", TASKS)
def test_bert_tasks(task, tiny_artifact):
    m = manifest_json(tiny_artifact("bert", task))
    assert m["task"] == task
    assert [o["name"] for o in m["outputs"]] == TASK_OUTPUTS[task]
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert m["inputs"][0]["dynamic_axes"] == {"0": "batch_size", "1": "sequence_length"}
    if task in ("text-classification", "token-classification"):
        assert m["postprocess"]["activation"] == "softmax"
        assert m["postprocess"]["id2label"]["0"] in ("NEG", "O")


@pytest.mark.parametrize("family", ["roberta", "distilbert", "xlm-roberta"])
def test_other_families_classification(family, tiny_artifact):
    m = manifest_json(tiny_artifact(family, "text-classification"))
    assert m["validation"]["passed"]
    if family == "distilbert":  # DistilBERT has no token_type_ids
        assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]


def test_task_inferred_from_head(tiny_checkpoint, tmp_path):
    res = export_checkpoint(str(tiny_checkpoint("bert", "token-classification")), tmp_path / "a")
    assert res.task_inferred and res.manifest.task == "token-classification"


def test_manifest_records_everything(tiny_artifact):
    out = tiny_artifact("bert", "feature-extraction")
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "onnxformer-artifact" and m["schema_version"] == 1
    assert set(m["source"]["sha256"]) == {"config.json", "model.safetensors"}
    for lib in ("torch", "transformers", "onnxscript", "onnx", "onnxruntime"):
        assert lib in m["versions"]
    made_by = m["variants"]["fp32"]["made_by"]
    assert made_by["tool"] == "torch.onnx.export" and made_by["dynamo"] is True
    assert made_by["transformers"] == m["versions"]["transformers"]
    assert "tokenizer.json" in m["tokenizer"]["files"]
    assert m["tokenizer"]["max_length"] == 128
    fp32 = m["variants"]["fp32"]
    assert fp32["file"] == "fp32/model.onnx" and len(fp32["sha256"]) == 64
    assert fp32["precision"] == "fp32" and fp32["size_bytes"] > 0
    assert m["opset"] >= 14


def test_tokenizer_alone_reproduces_transformers(tiny_checkpoint, tiny_artifact):
    """The artifact's tokenizer files suffice for the `tokenizers` library alone."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out = tiny_artifact("bert", "feature-extraction")
    texts = ["Hello, World!", "naïve café — 東京"]
    ours = [e.ids for e in Tokenizer.from_file(str(out / "tokenizer.json")).encode_batch(texts)]
    ref = AutoTokenizer.from_pretrained(tiny_checkpoint("bert", "feature-extraction"))(texts)["input_ids"]
    assert ours == ref


def test_runtime_raw_outputs_match_pytorch(tiny_checkpoint, tiny_artifact):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from onnxformer.runtime import Model

    ckpt = tiny_checkpoint("bert", "text-classification")
    model = Model.load(tiny_artifact("bert", "text-classification"))
    texts = ["a short one", "a considerably longer sentence with many more tokens in it"]
    batch = model.tokenizer.encode(texts)
    got = model.run(batch.feeds)["logits"]
    tok = AutoTokenizer.from_pretrained(ckpt)
    ref_model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    with torch.inference_mode():
        ref = ref_model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
