"""What the benchmark measures, shared by the orchestrator (harness.py) and the per-configuration worker
(isolation.py): the settings, the preflight, the shapes and candidates of a run, and the timed, interleaved
measurement of candidates with their fidelity probes. Imports neither of them."""
from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.tasks import tasks_where
from onnxformer.artifact.timing import time_calls, timed
from onnxformer.benchmarks import memory
from onnxformer.benchmarks.inputs import Inputs, make_inputs
from onnxformer.benchmarks.peers import PEER, PYTORCH, peer_candidates, select_peers
from onnxformer.benchmarks.postprocess import min_cosine, signature
from onnxformer.benchmarks.providers import GPU_PROVIDERS, resolve
from onnxformer.benchmarks.runners import ArtifactContext, Candidate, Runner, artifact_tokenizer, variant_candidates
from onnxformer.benchmarks.stats import Budget, summarize, time_interleaved
from onnxformer.errors import ArtifactError

Progress = Callable[[int, int, str], None]  # (done, total, description)


BENCHED = tasks_where(generative=False, tokenizer=True)  # encoder tasks that take text: what bench measures


@dataclass
class Settings:
    batches: list[int] = field(default_factory=lambda: [1, 8])
    seqs: list[int] = field(default_factory=lambda: [16, 128])
    threads: int = 2
    budget: Budget = field(default_factory=Budget)
    providers: list[str] | None = None  # short names; None = every available one
    variants: list[str] | None = None  # None = every variant in the manifest
    baselines: bool = True  # the PYTORCH peers (peers.py): PyTorch eager fp32 + autocast
    baseline_devices: list[str] | None = None  # "cpu", "cuda"; None = CPU, plus CUDA when a GPU provider runs
    # The PEER peers to run (peers.select_peers: "all", an environment such as "optimum", or a peer's name):
    # optimum, sentence-transformers ONNX, OpenVINO. None by default: each builds an environment on first use.
    peers: Sequence[str] = ()
    seed: int = 0
    isolate: bool = False  # each configuration in its own process (isolation.py); else all in this one, interleaved


def preflight(directory: str | Path, settings: Settings) -> tuple[Manifest, list[str]]:
    """Every check that can fail on user input, before anything is loaded: manifest, task, providers, variants."""
    import onnxruntime as ort

    manifest = Manifest.load(directory)
    if manifest.task not in BENCHED:
        raise ArtifactError(f"bench measures encoder tasks ({', '.join(BENCHED)}); {directory} is {manifest.task!r}")
    unknown = [v for v in settings.variants or [] if v not in manifest.variants]
    if unknown:
        raise ArtifactError(f"--variants {', '.join(unknown)}: not in this artifact; available: {', '.join(manifest.variants)}")
    return manifest, resolve(settings.providers, ort.get_available_providers())


def shapes(ctx: ArtifactContext, settings: Settings) -> tuple[list[Inputs], list[dict[str, Any]]]:
    """Inputs per (batch, seq); sequence lengths over the model's limit are skipped and reported."""
    tokenizer = artifact_tokenizer(ctx, ctx.manifest.input_names)
    shapes, skipped = [], []
    for seq in settings.seqs:
        if seq > tokenizer.max_length:
            skipped.append({"seq": seq, "reason": f"over the model's limit of {tokenizer.max_length} tokens"})
            continue
        shapes += [make_inputs(tokenizer, batch, seq, settings.seed) for batch in settings.batches]
    if not shapes:
        raise ArtifactError(f"every --seq is over the model's limit of {tokenizer.max_length} tokens; pass shorter ones")
    return shapes, skipped


def candidates(ctx: ArtifactContext, settings: Settings, providers: list[str], workdir: Path) -> list[Candidate]:
    """The peers (baselines first), then the artifact's variants."""
    return (peer_candidates(ctx, workdir, peer_devices(settings, providers), select_peers(settings.peers or ()))
            + variant_candidates(ctx, settings.variants, providers))


def peer_devices(settings: Settings, providers: list[str]) -> dict[str, list[str]]:
    """The devices each kind of peer runs on: PyTorch's baseline devices; other ONNX Runtime stacks on the
    devices of the providers being benchmarked."""
    gpu = any(p in providers for p in GPU_PROVIDERS)
    devices: dict[str, list[str]] = {}
    if settings.baselines:
        devices[PYTORCH] = settings.baseline_devices or ["cpu"] + (["cuda"] if gpu and torch_cuda() else [])
    if settings.peers:
        devices[PEER] = (["cpu"] if "cpu" in providers else []) + (["cuda"] if gpu else [])
    return devices


def torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def measure_all(candidates: list[Candidate], shapes: list[Inputs], budget: Budget, ctx: ArtifactContext,
                 report: dict[str, Any], signatures: dict, progress: Progress) -> None:
    """Load every configuration (one at a time, measuring its memory), then time them shape by shape,
    interleaved (stats.time_interleaved) so a shared machine's load hits all of them alike."""
    loaded: list[tuple[dict[str, Any], Runner]] = []
    total = len(candidates) + len(shapes) * 2
    for i, cand in enumerate(candidates):
        config = {"name": cand.name, "kind": cand.kind, "device": cand.device, "precision": cand.precision,
                  "status": "unavailable" if cand.load is None else "ok", "reason": cand.reason}
        report["configs"].append(config)
        if cand.load is not None:
            progress(i, total, f"loading {cand.name}")
            runner = guarded(config, lambda: load(cand, config))
            if runner is not None:
                loaded.append((config, runner))
    for j, inputs in enumerate(shapes):
        progress(len(candidates) + 2 * j, total, f"batch {inputs.batch} × {inputs.seq}: memory and fidelity")
        active = [(c, r, row) for c, r in loaded if (row := guarded(c, lambda: probe(r, inputs, c, ctx, signatures)))]
        loaded = [(c, r) for c, r, _ in active]  # a configuration that failed on one shape is dropped
        progress(len(candidates) + 2 * j + 1, total, f"batch {inputs.batch} × {inputs.seq}: timing {len(active)} configurations")
        syncs = [r.synchronize for _, r, _ in active]
        model = time_interleaved([functools.partial(r.model_only, inputs.feeds) for _, r, _ in active], budget, syncs)
        e2e = time_interleaved([functools.partial(r.end_to_end, inputs.texts) for _, r, _ in active], budget, syncs)
        for (_config, runner, row), m, e in zip(active, model, e2e):
            row.update(model_only=summarize(m, inputs.batch, inputs.seq), end_to_end=summarize(e, inputs.batch, inputs.seq))
            row["one_thread_p50_ms"] = one_thread_p50(runner, inputs, ctx.threads)
            report["results"].append(row)
    progress(total, total, "done")


ONE_THREAD_CALLS = 5


def one_thread_p50(runner: Runner, inputs: Inputs, threads: int) -> float | None:
    """Model-only p50 (ms) of a few calls with one thread, for a stack with a process-wide pool (PyTorch's
    OpenMP) measured with more: when one thread beats ``threads``, other load descheduled the pool's workers
    (OpenMP's barriers wait for the slowest) and ratios against that baseline are not to be trusted
    (summary.oversubscribed). None when not checked."""
    if runner.set_threads is None or threads <= 1:
        return None
    runner.set_threads(1)
    try:
        def call() -> None:
            runner.model_only(inputs.feeds)
            runner.synchronize()
        seconds = time_calls(call, runs=ONE_THREAD_CALLS, warmup=1)
    finally:
        runner.set_threads(threads)
    return float(np.median(seconds) * 1e3)


def guarded(config: dict[str, Any], step: Callable[[], Any]) -> Any:
    """Run one configuration's step; a failure (e.g. an op without a kernel) is recorded, not fatal to the others."""
    try:
        return step()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        config.update(status="failed", reason=f"{type(e).__name__}: {first}")
        return None


def load(cand: Candidate, config: dict[str, Any]) -> Runner:
    cand.prepare()  # e.g. optimum's export: not part of this configuration's load time or memory
    gc.collect()
    before = memory.current_rss_mb()
    config["load_average_1m"] = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    memory.reset_peak()
    assert cand.load is not None  # an unavailable candidate is recorded, never loaded
    config["load_seconds"], runner = timed(cand.load)
    config["load_peak_over_base_mb"] = memory.peak_rss_mb() - before
    config["resident_mb"] = memory.current_rss_mb() - before  # what stays resident once loaded
    config["size_mb"] = runner.size_bytes / 1e6
    return runner


def probe(runner: Runner, inputs: Inputs, config: dict[str, Any], ctx: ArtifactContext, signatures: dict) -> dict[str, Any]:
    """One untimed call: its peak memory above the steady state, and its outputs for the fidelity comparison."""
    gc.collect()
    steady = memory.current_rss_mb()
    memory.reset_peak()
    outputs = runner.model_only(inputs.feeds)
    run_peak = memory.peak_rss_mb() - steady
    signatures[(config["name"], inputs.batch, inputs.seq)] = signature(
        outputs, inputs.feeds["attention_mask"], ctx.task, ctx.post)
    return {
        "config": config["name"],
        "batch": inputs.batch,
        "seq": inputs.seq,
        "peak_rss_over_base_mb": config["resident_mb"] + max(0.0, run_peak),
        "run_peak_over_steady_mb": max(0.0, run_peak),
        "gpu_memory_mb": runner.gpu_memory_mb(),
        "size_mb": config["size_mb"],
    }


def add_fidelity(report: dict[str, Any], signatures: dict) -> None:
    """Worst-row cosine against PyTorch fp32 on the same inputs (the fp32 ONNX variant when PyTorch is unavailable)."""
    ran = [c["name"] for c in report["configs"] if c["status"] == "ok"]
    preferred = ["pytorch-fp32@cpu", "pytorch-fp32@cuda", "fp32@cpu"]
    reference = next((name for name in preferred + ran if name in ran), None)
    report["fidelity_reference"] = reference
    for row in report["results"]:
        ref = signatures.get((reference, row["batch"], row["seq"]))
        mine = signatures.get((row["config"], row["batch"], row["seq"]))
        row["fidelity_cosine"] = None if ref is None or mine is None else min_cosine(mine, ref)
