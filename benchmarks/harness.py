"""The benchmark matrix: every candidate × every (batch, seq), timed, measured and compared.

Candidates are loaded one at a time (each load's memory measured on its own), then every shape is
timed with all of them in interleaved rounds, so load from other jobs on a shared machine hits
every configuration alike. Fidelity and speedups are computed after the loop, so a Ctrl-C at any
point still yields a consistent (partial) report.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks import memory
from onnxformer.benchmarks.baselines import AUTO_CLASSES, OptimumPeer, pytorch_candidates
from onnxformer.benchmarks.environment import environment
from onnxformer.benchmarks.inputs import Inputs, make_inputs
from onnxformer.benchmarks.postprocess import min_cosine, signature
from onnxformer.benchmarks.providers import resolve
from onnxformer.benchmarks.runners import ArtifactContext, Candidate, Runner, artifact_tokenizer, variant_candidates
from onnxformer.benchmarks.stats import Budget, summarize, time_interleaved
from onnxformer.benchmarks.summary import add_comparisons
from onnxformer.errors import ArtifactError
from onnxformer.runtime.manifest import load_manifest

SCHEMA = "onnxformer-bench/1"
Progress = Callable[[int, int, str], None]  # (done, total, description)


@dataclass
class Settings:
    batches: list[int] = field(default_factory=lambda: [1, 8])
    seqs: list[int] = field(default_factory=lambda: [16, 128])
    threads: int = 2
    budget: Budget = field(default_factory=Budget)
    providers: list[str] | None = None  # short names; None = every available one
    variants: list[str] | None = None  # None = every variant in the manifest
    baselines: bool = True  # PyTorch eager fp32 + autocast
    baseline_devices: list[str] | None = None  # "cpu", "cuda"; None = CPU, plus CUDA when a GPU provider runs
    peers: bool = True  # optimum ORTModel fp32 + int8
    seed: int = 0
    isolate: bool = False  # each configuration in its own process (isolation.py); else all in this one, interleaved


def run_benchmark(directory: str | Path, settings: Settings, progress: Progress = lambda *_: None) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the report dict (raw floats, JSON-ready)."""
    directory = Path(directory)
    manifest, providers = preflight(directory, settings)
    ctx = ArtifactContext(directory, manifest, settings.threads, max(settings.batches))
    env = environment()
    report = _skeleton(directory, manifest, settings, providers, env)
    shapes, report["skipped_shapes"] = _shapes(ctx, settings)
    peer = OptimumPeer(ctx, env["cpu"]["flags"]["avx512_vnni"]) if settings.peers and "cpu" in providers else None
    candidates = _candidates(ctx, settings, providers, peer)
    signatures: dict[tuple[str, int, int], np.ndarray] = {}
    try:
        if settings.isolate:
            _measure_isolated(candidates, directory, settings, report, signatures, peer, progress)
        else:
            _measure_all(candidates, shapes, settings.budget, report, signatures, progress)
    except KeyboardInterrupt:
        report["interrupted"] = True  # keep what was measured; the caller writes it
    finally:
        if peer is not None:
            peer.close()
    report["load_average_1m_end"] = os.getloadavg()[0]
    _add_fidelity(report, signatures)
    add_comparisons(report)
    return report


def preflight(directory: str | Path, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """Every check that can fail on user input, before anything is loaded: manifest, task, providers, variants."""
    import onnxruntime as ort

    manifest = load_manifest(directory)
    if manifest["task"] not in AUTO_CLASSES:
        raise ArtifactError(f"bench measures encoder tasks ({', '.join(AUTO_CLASSES)}); {directory} is {manifest['task']!r}")
    unknown = [v for v in settings.variants or [] if v not in manifest["variants"]]
    if unknown:
        raise ArtifactError(f"--variants {', '.join(unknown)}: not in this artifact; available: {', '.join(manifest['variants'])}")
    return manifest, resolve(settings.providers, ort.get_available_providers())


def _skeleton(directory: Path, manifest: dict[str, Any], settings: Settings, providers: list[str],
              env: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": {"directory": str(directory), "name": manifest.get("name"), "task": manifest["task"],
                     "architecture": manifest["architecture"], "source": (manifest.get("source") or {}).get("path"),
                     "postprocess": manifest.get("postprocess", {})},
        "settings": {"batches": settings.batches, "seqs": settings.seqs, "threads": settings.threads,
                     "warmup": settings.budget.warmup, "iters": settings.budget.iters,
                     "seconds": settings.budget.seconds, "providers": providers,
                     "variants": settings.variants or list(manifest["variants"]), "isolate": settings.isolate},
        "memory_method": memory.METHOD,
        "load_average_1m_start": os.getloadavg()[0],  # > core count: other jobs competed for the CPU
        "environment": env,
        "configs": [],
        "results": [],
        "interrupted": False,
    }


def _shapes(ctx: ArtifactContext, settings: Settings) -> tuple[list[Inputs], list[dict[str, Any]]]:
    """Inputs per (batch, seq); sequence lengths over the model's limit are skipped and reported."""
    tokenizer = artifact_tokenizer(ctx, [i["name"] for i in ctx.manifest["inputs"]])
    shapes, skipped = [], []
    for seq in settings.seqs:
        if seq > tokenizer.max_length:
            skipped.append({"seq": seq, "reason": f"over the model's limit of {tokenizer.max_length} tokens"})
            continue
        shapes += [make_inputs(tokenizer, batch, seq, settings.seed) for batch in settings.batches]
    if not shapes:
        raise ArtifactError(f"every --seq is over the model's limit of {tokenizer.max_length} tokens; pass shorter ones")
    return shapes, skipped


def _candidates(ctx: ArtifactContext, settings: Settings, providers: list[str], peer: OptimumPeer | None) -> list[Candidate]:
    out: list[Candidate] = []
    if settings.baselines:
        gpu = ["cuda"] if any(p in providers for p in ("cuda", "tensorrt")) and _torch_cuda() else []
        devices = settings.baseline_devices or ["cpu"] + gpu
        out += pytorch_candidates(ctx, devices)
    if peer is not None:
        out += peer.candidates()
    return out + variant_candidates(ctx, settings.variants, providers)


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _measure_all(candidates: list[Candidate], shapes: list[Inputs], budget: Budget, report: dict[str, Any],
                 signatures: dict, progress: Progress) -> None:
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
            runner = _guarded(config, lambda: _load(cand, config))
            if runner is not None:
                loaded.append((config, runner))
    for j, inputs in enumerate(shapes):
        progress(len(candidates) + 2 * j, total, f"batch {inputs.batch} × {inputs.seq}: memory and fidelity")
        active = [(c, r, row) for c, r in loaded if (row := _guarded(c, lambda: _probe(r, inputs, c, report, signatures)))]
        loaded = [(c, r) for c, r, _ in active]  # a configuration that failed on one shape is dropped
        progress(len(candidates) + 2 * j + 1, total, f"batch {inputs.batch} × {inputs.seq}: timing {len(active)} configurations")
        syncs = [r.synchronize for _, r, _ in active]
        model = time_interleaved([lambda r=r: r.model_only(inputs.feeds) for _, r, _ in active], budget, syncs)
        e2e = time_interleaved([lambda r=r: r.end_to_end(inputs.texts) for _, r, _ in active], budget, syncs)
        for (config, _, row), m, e in zip(active, model, e2e):
            row.update(model_only=summarize(m, inputs.batch, inputs.seq), end_to_end=summarize(e, inputs.batch, inputs.seq))
            report["results"].append(row)
    progress(total, total, "done")


def _measure_isolated(candidates: list[Candidate], directory: Path, settings: Settings, report: dict[str, Any],
                      signatures: dict, peer: OptimumPeer | None, progress: Progress) -> None:
    """One child process per configuration, one after the other (see isolation.py)."""
    from onnxformer.benchmarks.isolation import fragment_signatures, run_isolated

    for i, cand in enumerate(candidates):
        if cand.load is None:
            report["configs"].append({"name": cand.name, "kind": cand.kind, "device": cand.device,
                                      "precision": cand.precision, "status": "unavailable", "reason": cand.reason})
            continue
        progress(i, len(candidates), f"{cand.name} (own process)")
        cand.prepare()  # e.g. optimum's export, made once here and shared with the worker through its directory
        fragment = run_isolated(directory, settings, cand.name, peer.workdir if peer else None)
        for config in fragment["configs"]:
            report["configs"].append({"kind": cand.kind, "device": cand.device, "precision": cand.precision, **config})
        report["results"] += fragment["results"]
        signatures.update(fragment_signatures(fragment))
        if fragment["interrupted"]:
            raise KeyboardInterrupt
    progress(len(candidates), len(candidates), "done")


def _guarded(config: dict[str, Any], step: Callable[[], Any]) -> Any:
    """Run one configuration's step; a failure (e.g. an op without a kernel) is recorded, not fatal to the others."""
    try:
        return step()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        config.update(status="failed", reason=f"{type(e).__name__}: {first}")
        return None


def _load(cand: Candidate, config: dict[str, Any]) -> Runner:
    cand.prepare()  # e.g. optimum's export: not part of this configuration's load time or memory
    gc.collect()
    before = memory.current_rss_mb()
    config["load_average_1m"] = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    memory.reset_peak()
    start = time.perf_counter()
    runner = cand.load()
    config["load_seconds"] = time.perf_counter() - start
    config["load_peak_over_base_mb"] = memory.peak_rss_mb() - before
    config["resident_mb"] = memory.current_rss_mb() - before  # what stays resident once loaded
    config["size_mb"] = runner.size_bytes / 1e6
    return runner


def _probe(runner: Runner, inputs: Inputs, config: dict[str, Any], report: dict[str, Any], signatures: dict) -> dict[str, Any]:
    """One untimed call: its peak memory above the steady state, and its outputs for the fidelity comparison."""
    gc.collect()
    steady = memory.current_rss_mb()
    memory.reset_peak()
    outputs = runner.model_only(inputs.feeds)
    run_peak = memory.peak_rss_mb() - steady
    art = report["artifact"]
    signatures[(config["name"], inputs.batch, inputs.seq)] = signature(
        outputs, inputs.feeds["attention_mask"], art["task"], art["postprocess"])
    return {
        "config": config["name"],
        "batch": inputs.batch,
        "seq": inputs.seq,
        "peak_rss_over_base_mb": config["resident_mb"] + max(0.0, run_peak),
        "run_peak_over_steady_mb": max(0.0, run_peak),
        "gpu_memory_mb": runner.gpu_memory_mb(),
        "size_mb": config["size_mb"],
    }


def _add_fidelity(report: dict[str, Any], signatures: dict) -> None:
    """Worst-row cosine against PyTorch fp32 on the same inputs (the fp32 ONNX variant when PyTorch is unavailable)."""
    ran = [c["name"] for c in report["configs"] if c["status"] == "ok"]
    preferred = ["pytorch-fp32@cpu", "pytorch-fp32@cuda", "fp32@cpu"]
    reference = next((name for name in preferred + ran if name in ran), None)
    report["fidelity_reference"] = reference
    for row in report["results"]:
        ref = signatures.get((reference, row["batch"], row["seq"]))
        mine = signatures.get((row["config"], row["batch"], row["seq"]))
        row["fidelity_cosine"] = None if ref is None or mine is None else min_cosine(mine, ref)
