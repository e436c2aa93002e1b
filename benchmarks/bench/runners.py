"""What the harness times: a Runner (model-only and end-to-end calls) and the Candidates that load one.

ONNX variants of the artifact are built here, through the runtime's one loader (sha256, external data
confined, provider start checked); PyTorch baselines and other peers are registered in peers.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import Manifest, Postprocess, verify_files
from onnxformer.benchmarks.postprocess import finish
from onnxformer.benchmarks.providers import GPU_PROVIDERS, tensorrt_precisions
from onnxformer.errors import ArtifactError
from onnxformer.runtime.binding import Runner as SessionRunner
from onnxformer.runtime.loader import LoadOptions, open_variant, provider_options
from onnxformer.runtime.providers import tensorrt_major
from onnxformer.runtime.tokenizer import TextTokenizer

Feeds = dict[str, np.ndarray]
VARIANT = "variant"  # Candidate.kind of the artifact's own variants (peers.py names the others)


@dataclass
class Runner:
    """A loaded configuration. ``model_only`` takes (B, T) feeds; ``end_to_end`` takes texts and post-processes."""

    model_only: Callable[[Feeds], dict[str, np.ndarray]]
    end_to_end: Callable[[list[str]], np.ndarray]
    size_bytes: float
    synchronize: Callable[[], None] = lambda: None
    gpu_memory_mb: Callable[[], float | None] = lambda: None
    # Sets the intra-op thread count of a stack whose pool is process-wide (PyTorch's OpenMP): the harness's
    # one-thread check of an oversubscribed baseline (measure.one_thread_p50). None: not checked.
    set_threads: Callable[[int], None] | None = None


@dataclass
class Candidate:
    """One configuration to benchmark. ``load`` is None when it cannot run here; ``reason`` says why."""

    name: str  # e.g. "int8@cpu", "pytorch-fp32@cpu"
    kind: str  # "pytorch" | "peer" | VARIANT: what the summary compares against what
    device: str  # "cpu" | "gpu"
    precision: str
    load: Callable[[], Runner] | None = None
    reason: str | None = None
    prepare: Callable[[], None] = field(default=lambda: None)  # untimed, unmeasured setup (peer export)
    own_process: bool = False  # a peer in its own environment (peers.py): its own process even with --in-process


@dataclass(frozen=True)
class ArtifactContext:
    directory: Path
    manifest: Manifest
    threads: int
    max_batch: int  # TensorRT shape profiles cover up to this batch

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def post(self) -> Postprocess:
        return self.manifest.postprocess


def artifact_tokenizer(ctx: ArtifactContext, input_names: list[str]) -> TextTokenizer:
    """The runtime's own tokenizer, files verified against the manifest first."""
    spec = ctx.manifest.tokenizer
    if spec is None:
        raise ArtifactError(f"{ctx.directory} has no tokenizer; bench measures text models (re-export with one)")
    verify_files(ctx.directory, spec.files)
    return TextTokenizer(confined(ctx.directory, "tokenizer.json"), spec, input_names)


def variant_candidates(ctx: ArtifactContext, variants: list[str] | None, providers: list[str]) -> list[Candidate]:
    """Every requested variant on every provider it targets (TensorRT: one engine per build precision)."""
    out = []
    for name in variants or list(ctx.manifest.variants):
        record = ctx.manifest.variant(name)  # names checked by measure.preflight
        for provider in (p for p in providers if p in (record.providers or ["cpu"])):
            builds = tensorrt_precisions(record.precision, tensorrt_major()) if provider == "tensorrt" else [record.precision]
            for build in builds:
                label = f"{name}@{provider}" + (f"-{build}" if provider == "tensorrt" else "")
                out.append(Candidate(label, VARIANT, "gpu" if provider in GPU_PROVIDERS else "cpu",
                                     record.precision, load=_variant_loader(ctx, name, provider, build)))
            if provider == "cuda" and packable(record):  # BERT-class attention, unpadded: ORT's own packing mode
                out.append(Candidate(f"{name}@cuda-packed", VARIANT, "gpu", record.precision,
                                     load=_packed_loader(ctx, name)))
    return out


def packable(record: Any) -> bool:
    """ORT's packing mode takes a fused ``Attention`` with a 2-D mask (BERT-like families, either export path);
    the MultiHeadAttention of other families takes a float attention bias, which ``PackedMultiHeadAttention``
    cannot."""
    return bool(record.fused and (record.made_by.get("fused_ops") or {}).get("Attention"))


def packed_graph(source: Path, out: Path) -> Path:
    """``source`` (a fused graph: Attention contrib ops) in ONNX Runtime's packing mode: RemovePadding before the
    first Attention, PackedAttention over the real tokens only, RestorePadding after the last LayerNorm. The
    inputs stay (B, T) + attention mask; the padding is never computed. Those kernels exist on CUDA only."""
    import onnx
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    from onnxruntime.transformers.onnx_model import OnnxModel

    from onnxformer.artifact.onnx_save import save_onnx

    model = OnnxModel(onnx.load(str(source)))
    PackingMode(model).convert(use_symbolic_shape_infer=True)
    if not model.get_nodes_by_op_type("RemovePadding"):
        raise ArtifactError(f"{source}: packing mode needs ONNX Runtime's fused Attention with a 2-D attention mask "
                            "(an fp32-opt-derived graph of a BERT-like family); none was found")
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(model.model, out)


def _packed_loader(ctx: ArtifactContext, variant: str) -> Callable[[], Runner]:
    """The variant, verified as open_variant verifies it, converted to packing mode next to the run and started
    on CUDA with I/O binding (the provider start checked like any other)."""
    def load() -> Runner:
        import tempfile

        from onnxformer.artifact.manifest import verify_variant
        from onnxformer.runtime.external import check_external_data
        from onnxformer.runtime.loader import start_runner

        record = ctx.manifest.variant(variant)
        graph = verify_variant(ctx.directory, ctx.manifest, variant)  # sha256 before the converter reads it
        check_external_data(ctx.directory, record, graph)
        work = Path(tempfile.mkdtemp(prefix="onnxformer-packed-"))
        path = packed_graph(confined(ctx.directory, record.file), work / "model.onnx")
        options = LoadOptions(provider="cuda", variant=variant, threads=ctx.threads, max_batch_size=ctx.max_batch)
        runner = start_runner(path, "cuda", provider_options(ctx.manifest, record, "cuda", options), options)
        return onnx_runner(runner, artifact_tokenizer(ctx, list(runner.inputs)), ctx, float(record.size_bytes), "cuda")

    return load


def _variant_loader(ctx: ArtifactContext, variant: str, provider: str, build: str) -> Callable[[], Runner]:
    """Open the variant as ``Model.load`` does (runtime.loader.open_variant), with TensorRT's engine built at
    ``build`` precision. On the CPU plain ``session.run`` calls, as the benchmark has always timed them; on GPU
    providers I/O binding into reused device buffers, as ``Model.load`` runs them (the loader's default)."""
    def load() -> Runner:
        options = LoadOptions(provider=provider, variant=variant, threads=ctx.threads,
                              io_binding=None if provider in GPU_PROVIDERS else False,
                              max_batch_size=ctx.max_batch)
        record = ctx.manifest.variant(variant)
        engine = provider_options(ctx.manifest, record, provider, options, precision=build)
        opened = open_variant(ctx.directory, ctx.manifest, variant, provider, options, provider_opts=engine)
        runner = opened.runner
        return onnx_runner(runner, artifact_tokenizer(ctx, list(runner.inputs)), ctx, float(record.size_bytes), provider)

    return load


def onnx_runner(runner: SessionRunner, tokenizer: TextTokenizer, ctx: ArtifactContext, size_bytes: float,
                provider: str = "cpu") -> Runner:
    def end_to_end(texts: list[str]) -> np.ndarray:
        feeds = tokenizer.encode(texts, truncate=True).feeds
        return finish(runner.run(feeds), feeds["attention_mask"], ctx.task, ctx.post)

    return Runner(runner.run, end_to_end, size_bytes,
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
