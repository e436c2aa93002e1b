"""Artifacts exported before the dynamo path (transformers 4.57 + optimum-onnx, TorchScript graphs) still load,
run, and take new variants. The fixture was exported by onnxformer on transformers 4.57.6 from the tiny
checkpoint beside it (tests/data/legacy-tiny-bert-ckpt, 2 layers × 32, 3000-token vocabulary)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxformer.artifact.manifest import load_manifest, verify_variant
from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact
from onnxformer.runtime import Model

DATA = Path(__file__).parent / "data"
LEGACY = DATA / "legacy-tiny-bert-transformers4"
CHECKPOINT = DATA / "legacy-tiny-bert-ckpt"
TEXTS = ["Hello world.", "a much longer sentence, so that the batch has padding in it"]


@pytest.fixture
def legacy(tmp_path) -> Path:
    return Path(shutil.copytree(LEGACY, tmp_path / "legacy"))


def _reference(texts: list[str]) -> np.ndarray:
    """Mean-pooled last hidden state from transformers (whichever version runs the tests)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(CHECKPOINT)
    model = AutoModel.from_pretrained(CHECKPOINT).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def test_legacy_manifest_records_its_exporter():
    manifest = load_manifest(LEGACY)
    assert manifest.versions["transformers"].startswith("4.")
    assert manifest.variants["fp32"].made_by["tool"] == "optimum.exporters.onnx"


def test_legacy_artifact_runs_like_transformers(legacy):
    got = Model.load(legacy, provider="cpu").embed(TEXTS)
    np.testing.assert_allclose(got, _reference(TEXTS), atol=2e-5)


def test_legacy_artifact_takes_new_variants(legacy):
    fused = optimize_artifact(legacy).record.made_by["fused_ops"]
    assert fused.get("Attention") == 2 and fused.get("SkipLayerNormalization") == 4  # ORT's fusions, as before
    quantize_artifact(legacy, "int8", smooth=False, budget=0.9)
    manifest = load_manifest(legacy)
    for name in ("fp32", "fp32-opt", "int8"):
        verify_variant(legacy, manifest, name)
    got = Model.load(legacy, provider="cpu", variant="int8").embed(TEXTS)
    ref = _reference(TEXTS)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9
