"""fp32-opt: ONNX Runtime fusions on tiny BERT / RoBERTa / DistilBERT, recorded and verifiable."""
from __future__ import annotations

import collections

import onnx
import pytest

from onnxformer.artifact.manifest import load_manifest, verify_variant
from onnxformer.cli import main
from onnxformer.quantize.pipeline import optimize_artifact

# 2 layers each, exported through torch.onnx's dynamo path: one Attention (onnxscript's fusion, fed the padding mask
# as ORT's 2-D mask_index), one BiasGelu and two SkipLayerNormalization per layer. BERT's token types keep its
# embeddings out of ORT's EmbedLayerNormalization on this graph (a LayerNormalization instead).
EXPECTED = {
    "bert": {"LayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4},
    "distilbert": {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4},
    "roberta": {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4},
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_fusion_counts(family, tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact(family, "feature-extraction"))
    result = optimize_artifact(art)
    made_by = result.record.made_by
    assert made_by["fused_ops"] == EXPECTED[family]
    assert (made_by["model_type"], made_by["num_heads"], made_by["hidden_size"]) == ("bert", 4, 32)
    graph = onnx.load(str(art / "fp32-opt" / "model.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert {op: ops[op] for op in EXPECTED[family]} == EXPECTED[family]  # the record describes the file
    assert "MatMul" in ops and "Softmax" not in ops  # attention really fused, no loose softmax left
    assert made_by["onnxscript_fusions"]["mask_index"] == 2  # the padding mask reaches Attention as mask_index
    assert not {n.input[5] for n in graph.node if n.op_type == "Attention" and len(n.input) > 5} - {""}
    assert result.record.fidelity["min_cosine"] > 0.9999
    manifest = load_manifest(art)
    for name in ("fp32", "fp32-opt"):
        verify_variant(art, manifest, name)
    assert manifest.variants["fp32-opt"].providers == ["cuda", "cpu"]


def test_optimize_cli_and_bad_input(tiny_artifact, copy_artifact, tmp_path, capsys):
    assert main(["optimize", str(tmp_path)]) == 1
    assert "manifest.json" in capsys.readouterr().err
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    assert main(["optimize", str(art)]) == 0
    assert "Attention×2" in capsys.readouterr().err  # rich console writes to stderr
    verify_variant(art, load_manifest(art), "fp32-opt")
