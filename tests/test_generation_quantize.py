"""Generative variants: fp16, int8 dynamic, int4 MatMulNBits — made by ORT tooling, measured, loadable."""
from __future__ import annotations

from pathlib import Path

import httpx
import onnx
import pytest

from onnxformer.errors import QuantizationError


@pytest.fixture(scope="session", params=["gpt2", "t5"])
def quantized(request, tmp_path_factory) -> Path:
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint
    from onnxformer.quantize.generative import quantize_generative

    family = request.param
    ckpt = make_generative_checkpoint(tmp_path_factory.mktemp(f"q-ckpt-{family}"), family)
    out = tmp_path_factory.mktemp(f"q-art-{family}") / "artifact"
    export_checkpoint(str(ckpt), out)
    quantize_generative(out)
    return out


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_every_variant_is_recorded_with_fidelity(quantized):
    from onnxformer.artifact.manifest import load_manifest

    m = load_manifest(quantized)
    assert set(m.variants) == {"fp32", "fp16", "int8", "int4"}
    for name in ("fp16", "int8", "int4"):
        v = m.variants[name]
        fid = v.fidelity
        assert fid["reference"] == "fp32" and fid["texts"] >= 3 and fid["positions"] > 100
        assert 0.0 <= fid["next_token_agreement"] <= 1.0
        assert fid["perplexity_delta"] == pytest.approx(fid["perplexity"] / fid["perplexity_fp32"] - 1.0)
        assert set(v.components) == set(m.variants["fp32"].components)
        assert all(rel.startswith(f"{name}/") and rel in v.files for rel in v.components.values())
    assert m.variants["fp16"].cache_dtype == "float16"  # the KV cache itself is half size
    assert m.variants["int8"].cache_dtype == "float32"
    assert m.variants["fp16"].fidelity["next_token_agreement"] > 0.8


def test_variants_use_the_quantized_operators(quantized):
    from onnxformer.artifact.manifest import load_manifest

    m = load_manifest(quantized)
    decoder = Path(m.variants["int4"].components["decoder"]).name
    assert "MatMulNBits" in _ops(quantized / "int4" / decoder)
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(quantized / "int8" / decoder)
    fp16 = onnx.load(str(quantized / "fp16" / decoder), load_external_data=False)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


@pytest.mark.parametrize("variant", ["fp16", "int8", "int4"])
def test_each_variant_generates(quantized, variant):
    from onnxformer.runtime.generation import Generator

    gen = Generator.load(quantized, variant=variant)
    ids = gen.generate_ids(["The quick brown fox", "Hi"], max_new_tokens=6)
    assert all(1 <= len(row) <= 6 for row in ids)
    assert "".join(gen.stream("Hi", max_new_tokens=6)) == gen.generate("Hi", max_new_tokens=6)


@pytest.mark.parametrize("variant", ["fp16", "int4"])
def test_each_variant_batches_continuously_like_its_solo_runs(quantized, variant):
    """The continuous batch on a variant's own graphs (fp16: a half-size cache in the batch's buffers too); int4's
    MatMulNBits quantizes activations per row and block, so rows stay independent. Dynamic int8 does not (below)."""
    from conftest import BATCH_MAX_NEW, BATCH_PROMPTS, staggered

    from onnxformer.runtime.generation import Generator
    from onnxformer.runtime.generation.scheduler import SlotLimits
    from onnxformer.runtime.generation.schedulers import batch_scheduler

    gen = Generator.load(quantized, variant=variant, batching=True)
    prompts, max_new = BATCH_PROMPTS[:4], BATCH_MAX_NEW[:4]
    solo = [gen.generate_ids([p], max_new_tokens=m)[0] for p, m in zip(prompts, max_new)]
    batch = batch_scheduler(gen, SlotLimits(max_slots=3, max_cached_tokens=3 * 96))
    assert [s.ids for s in staggered(batch, prompts, max_new, 1)] == solo


def test_bad_requests_are_refused(quantized, tiny_artifact):
    from onnxformer.quantize.generative import quantize_generative

    with pytest.raises(QuantizationError, match="unknown generative variant"):
        quantize_generative(quantized, ["int2"])
    with pytest.raises(QuantizationError, match="not a generative artifact"):
        quantize_generative(tiny_artifact("bert", "feature-extraction"))


def test_build_stage_quantizes_generative_artifacts(quantized, copy_artifact):
    from onnxformer.artifact.manifest import load_manifest, verify_variant
    from onnxformer.quantize.stage import quantize_stage

    art = copy_artifact(quantized)
    rows = quantize_stage(art, lambda _: None)
    assert [r["variant"] for r in rows] == ["fp16", "int8", "int4"]
    assert all("next-token agreement" in r["detail"] for r in rows), rows
    m = load_manifest(art)
    for name in m.variants:
        verify_variant(art, m, name)


def test_fidelity_metrics():
    import numpy as np

    from onnxformer.quantize.generative import fidelity

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    targets = rng.integers(0, 10, size=6)
    same = fidelity([(logits, targets)], [(logits, targets)])
    assert same["next_token_agreement"] == 1.0 and same["perplexity_delta"] == 0.0
    flat = fidelity([(logits, targets)], [(np.zeros_like(logits), targets)])
    assert flat["perplexity"] == pytest.approx(10.0, rel=1e-5)  # uniform over 10 tokens
    assert flat["next_token_agreement"] == pytest.approx(np.mean(logits.argmax(-1) == 0))


def test_cli_quantize_generative(quantized, copy_artifact, capsys):
    from onnxformer.cli import main

    art = copy_artifact(quantized)
    assert main(["quantize-generative", str(art), "--variants", "int8"]) == 0
    captured = capsys.readouterr()
    assert "int8: next-token agreement" in captured.out + captured.err  # rich console: stderr
    assert main(["quantize-generative", str(art), "--variants", "int3"]) == 1
    assert "unknown generative variant(s) ['int3']" in capsys.readouterr().err


def test_dynamic_int8_says_its_rows_depend_on_their_batch_mates(quantized):
    """One activation scale per call (DynamicQuantizeLinear): the manifest records it, the generator and the
    server's metadata say so; fp32, fp16 and int4 are batch-invariant."""
    from devkit.servers import running_server
    from onnxformer.artifact.manifest import PER_CALL, load_manifest
    from onnxformer.runtime.generation import Generator

    m = load_manifest(quantized)
    assert m.variants["int8"].activation_scales == PER_CALL and not m.variants["int8"].batch_invariant
    assert all(m.variants[v].batch_invariant for v in ("fp32", "fp16", "int4"))
    gen = Generator.load(quantized, variant="int8", batching=True)
    assert gen.batch_invariant is False
    with running_server(lambda: gen) as url:
        meta = httpx.get(f"{url}/v2/models/{m.name}", timeout=10).json()["parameters"]
    assert meta["continuous_batching"] is True and meta["batch_invariant"] is False
