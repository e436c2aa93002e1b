"""What the harness times: a Runner (model-only and end-to-end calls) and the Candidates that load one.

ONNX variants of the artifact are built here; PyTorch baselines and optimum peers in baselines.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks.postprocess import finish
from onnxformer.benchmarks.providers import GPU_PROVIDERS, tensorrt_precisions, variant_providers
from onnxformer.errors import ProviderError
from onnxformer.runtime.files import confined
from onnxformer.runtime.manifest import verify_files, verify_variant
from onnxformer.runtime.session import create_session, session_options
from onnxformer.runtime.tokenizer import TextTokenizer

Feeds = dict[str, np.ndarray]


@dataclass
class Runner:
    """A loaded configuration. ``model_only`` takes (B, T) feeds; ``end_to_end`` takes texts and post-processes."""

    model_only: Callable[[Feeds], dict[str, np.ndarray]]
    end_to_end: Callable[[list[str]], np.ndarray]
    size_bytes: float
    synchronize: Callable[[], None] = lambda: None
    gpu_memory_mb: Callable[[], float | None] = lambda: None


@dataclass
class Candidate:
    """One configuration to benchmark. ``load`` is None when it cannot run here; ``reason`` says why."""

    name: str  # e.g. "int8@cpu", "pytorch-fp32@cpu"
    kind: str  # "pytorch" | "peer" | "variant"
    device: str  # "cpu" | "gpu"
    precision: str
    load: Callable[[], Runner] | None = None
    reason: str | None = None
    prepare: Callable[[], None] = field(default=lambda: None)  # untimed, unmeasured setup (peer export)


@dataclass(frozen=True)
class ArtifactContext:
    directory: Path
    manifest: dict[str, Any]
    threads: int
    max_batch: int  # TensorRT shape profiles cover up to this batch

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def post(self) -> dict[str, Any]:
        return self.manifest.get("postprocess", {})


def artifact_tokenizer(ctx: ArtifactContext, input_names: list[str]) -> TextTokenizer:
    """The runtime's own tokenizer, files verified against the manifest first."""
    spec = ctx.manifest["tokenizer"]
    verify_files(ctx.directory, spec["files"])
    return TextTokenizer(confined(ctx.directory, "tokenizer.json"), spec, input_names)


def variant_candidates(ctx: ArtifactContext, variants: list[str] | None, providers: list[str]) -> list[Candidate]:
    """Every requested variant on every provider it targets (TensorRT: one engine per build precision)."""
    names = variants or list(ctx.manifest["variants"])
    out = []
    for name in names:
        record = ctx.manifest["variants"][name]  # names checked by harness.preflight
        targets = record.get("providers") or ["cpu"]
        for provider in providers:
            if provider not in targets:
                continue
            builds = tensorrt_precisions(record["precision"]) if provider == "tensorrt" else [record["precision"]]
            for build in builds:
                label = f"{name}@{provider}" + (f"-{build}" if provider == "tensorrt" else "")
                out.append(Candidate(label, "variant", "gpu" if provider in GPU_PROVIDERS else "cpu",
                                     record["precision"], load=_variant_loader(ctx, name, provider, build)))
    return out


def _variant_loader(ctx: ArtifactContext, variant: str, provider: str, build: str) -> Callable[[], Runner]:
    def load() -> Runner:
        path = verify_variant(ctx.directory, ctx.manifest, variant)  # sha256 before ONNX Runtime sees the file
        record = ctx.manifest["variants"][variant]
        chosen = variant_providers(provider, ctx.manifest, record, build, max_batch=ctx.max_batch)
        full = chosen[0][0]
        session = create_session(path, providers=chosen, options=session_options(ctx.threads))
        if session.get_providers()[0] != full:
            raise ProviderError(f"{variant} did not load on {full} (got {session.get_providers()}); check the GPU install")
        return onnx_runner(session, artifact_tokenizer(ctx, [i.name for i in session.get_inputs()]), ctx,
                           float(ctx.manifest["variants"][variant]["size_bytes"]), provider)

    return load


def onnx_runner(session: Any, tokenizer: TextTokenizer, ctx: ArtifactContext, size_bytes: float,
                provider: str = "cpu") -> Runner:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def model_only(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {k: feeds[k] for k in inputs})))

    def end_to_end(texts: list[str]) -> np.ndarray:
        feeds = tokenizer.encode(texts, truncate=True).feeds
        return finish(model_only(feeds), feeds["attention_mask"], ctx.task, ctx.post)

    return Runner(model_only, end_to_end, size_bytes,
                  gpu_memory_mb=gpu_process_memory_mb if provider in GPU_PROVIDERS else (lambda: None))


def gpu_process_memory_mb() -> float | None:
    """GPU memory this process holds, from nvidia-smi (ONNX Runtime exposes no peak counter)."""
    import os
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=30)
    for line in done.stdout.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None
