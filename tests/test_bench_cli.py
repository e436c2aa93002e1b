"""`onnxformer bench` and the build stage: options, files written, one-line errors; baselines from the manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxformer.artifact.manifest import load_manifest
from onnxformer.benchmarks import stage
from onnxformer.benchmarks.availability import load_pytorch, source_path
from onnxformer.benchmarks.cli import int_list
from onnxformer.benchmarks.peers import PYTORCH, peer_candidates
from onnxformer.benchmarks.providers import resolve, tensorrt_precisions
from onnxformer.benchmarks.runners import ArtifactContext
from onnxformer.cli import main
from onnxformer.errors import ProviderError
from onnxformer.runtime.loader import LoadOptions, provider_options
from onnxformer.runtime.providers import session_providers


def pytorch_candidates(ctx: ArtifactContext, devices: list[str]) -> list:
    """The PyTorch baselines of the peer registry on ``devices`` (they build nothing in the work directory)."""
    return peer_candidates(ctx, Path("/nonexistent"), {PYTORCH: devices})


def variant_providers(provider, manifest, record, build, *, max_batch, cache_root=None, gpu=None) -> list:
    """ORT's provider list for a variant as the benchmark runners open it (runtime.loader, TensorRT engine
    precision ``build``); ``gpu`` is ignored: the loader names this machine's GPU in the engine cache path."""
    options = LoadOptions(provider=provider, max_batch_size=max_batch, trt_cache=cache_root)
    return session_providers(provider, provider_options(manifest, record, provider, options, precision=build))


def test_bench_command_writes_every_file(tiny_artifact, tmp_path, capsys):
    out = tmp_path / "r" / "tiny.json"
    code = main(["bench", str(tiny_artifact("bert", "feature-extraction")), "--batch", "1", "--seq", "8",
                 "--iters", "2", "--warmup", "1", "--threads", "1", "--providers", "cpu", "--in-process",
                 "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["iters"] == 2 and report["settings"]["threads"] == 1
    assert {c["name"] for c in report["configs"]} == {"pytorch-fp32@cpu", "pytorch-bf16@cpu", "fp32@cpu"}
    for name in ("tiny.md", "tiny-latency.png", "tiny-speedup.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0


def test_bench_errors_are_one_line(tiny_artifact, tmp_path, capsys):
    art = str(tiny_artifact("bert", "feature-extraction"))
    assert main(["bench", art, "--providers", "tensorrt", "--iters", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tensorrt not available" in err and "onnxruntime-gpu" in err
    assert main(["bench", art, "--variants", "int3", "--iters", "1", "--out", str(tmp_path / "x.json")]) == 1
    assert "--variants int3: not in this artifact; available: fp32" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bench_on_a_read_only_artifact_fails_before_measuring(tiny_artifact, copy_artifact, tmp_path, capsys,
                                                               monkeypatch):
    """Issue 16, defect 5: bench measured everything, then crashed writing into a read-only artifact."""
    import os

    from onnxformer.benchmarks import harness

    if os.geteuid() == 0:  # root writes through read-only modes: make the directory unwritable another way
        monkeypatch.setattr("tempfile.mkdtemp", _refuse_writes)
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    measured = []
    monkeypatch.setattr(harness, "run_benchmark", lambda *a, **k: measured.append(1))
    os.chmod(art, 0o555)
    try:
        assert main(["bench", str(art), "--iters", "1", "--providers", "cpu"]) == 1
    finally:
        os.chmod(art, 0o755)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write the report to" in err and "--out PATH" in err
    assert measured == []


def _refuse_writes(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_bench_option_parsing(tiny_artifact):
    assert int_list("1,8,32") == [1, 8, 32]
    with pytest.raises(SystemExit):
        main(["bench", "x", "--batch", "1,a"])
    with pytest.raises(SystemExit):  # --iters and --seconds are exclusive
        main(["bench", "x", "--iters", "3", "--seconds", "1"])


def test_build_stage_rows(tiny_artifact, copy_artifact, monkeypatch):
    monkeypatch.setattr(stage, "BUILD_SECONDS", 0.02)
    # one thread: no oversubscription check, whose note (on a busy machine) replaces the ratio (test_cli_console)
    monkeypatch.setattr("onnxformer.runtime.session.physical_cores", lambda: 1)
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    rows = stage.bench_stage(None, art, lambda msg: None)
    assert [r["variant"] for r in rows] == ["pytorch-fp32@cpu", "pytorch-bf16@cpu", "fp32@cpu"]
    assert all(r["stage"] == "bench" and r["detail"].startswith("1×128: p50 ") for r in rows)
    assert "× PyTorch fp32" in rows[-1]["detail"] and rows[-1]["seconds"] > 0
    assert (art / "bench.json").is_file() and (art / "bench.md").is_file()
    load_manifest(art)  # the manifest is untouched and still loads


def test_baseline_loaded_from_the_manifest_source(tiny_artifact, tiny_checkpoint):
    art = tiny_artifact("bert", "feature-extraction")
    manifest = load_manifest(art)
    path, reason = source_path(manifest)
    assert path == tiny_checkpoint("bert", "feature-extraction").resolve() and reason is None
    ctx = ArtifactContext(art, manifest, threads=1, max_batch=1)
    runner = load_pytorch(ctx, path, "cpu", None)
    import torch
    from transformers import AutoModel

    ids = np.array([[101, 2023, 2003, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    reference = AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        want = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    np.testing.assert_allclose(runner.model_only(feeds)["last_hidden_state"], want.last_hidden_state.numpy(), atol=1e-6)
    assert runner.size_bytes == sum(p.numel() * 4 for p in reference.parameters())  # fp32 weights in memory
    names = [c.name for c in pytorch_candidates(ctx, ["cpu"])]
    assert names == ["pytorch-fp32@cpu", "pytorch-bf16@cpu"]


def test_moved_source_checkpoint_is_reported(tiny_artifact, copy_artifact, tmp_path):
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    manifest = load_manifest(art)
    manifest.source["path"] = str(tmp_path / "gone")
    manifest.save(art)
    cands = pytorch_candidates(ArtifactContext(art, manifest, 1, 1), ["cpu"])
    assert all(c.load is None and "is gone" in c.reason and "re-export" in c.reason for c in cands)


def test_providers_and_tensorrt_options(tiny_artifact, tmp_path):
    assert resolve(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["cpu"]
    assert resolve(None, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "tensorrt", "cuda", "cpu"]
    assert resolve(["CUDAExecutionProvider"], ["CUDAExecutionProvider"]) == ["cuda"]
    with pytest.raises(ProviderError, match="unknown provider 'rocm'"):
        resolve(["rocm"], ["CPUExecutionProvider"])
    manifest = load_manifest(tiny_artifact("bert", "feature-extraction"))
    record = manifest.variant("fp32")
    chain = variant_providers("tensorrt", manifest, record, "int8", max_batch=32, cache_root=tmp_path, gpu="Test GPU")
    assert [name for name, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = chain[0][1]
    assert opts["trt_int8_enable"] and opts["trt_fp16_enable"] and str(tmp_path) in opts["trt_engine_cache_path"]
    assert "input_ids:32x128" in opts["trt_profile_max_shapes"]  # batch from --batch, tokens from the tokenizer limit
    fp32 = variant_providers("tensorrt", manifest, record, "fp32", max_batch=8, cache_root=tmp_path, gpu="Test GPU")
    assert fp32[0][1]["trt_fp16_enable"] is False and fp32[0][1]["trt_int8_enable"] is False
    assert variant_providers("cpu", manifest, record, "fp32", max_batch=1) == [("CPUExecutionProvider", {})]
    assert variant_providers("cuda", manifest, record, "fp32", max_batch=1)[0][0] == "CUDAExecutionProvider"
    assert tensorrt_precisions("fp32") == ["fp32", "fp16"] and tensorrt_precisions("int8") == ["int8"]
    assert tensorrt_precisions("fp16") == ["fp16"]
