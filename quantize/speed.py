"""Latency on this CPU: the probe behind budget failures, and the latencies recorded per variant.

``record_latencies`` times every CPU variant of an artifact side by side (batch 1 × up to 128 tokens) and records
each with the CPU it ran on (``Variant.latency``), so that ``variant="auto"`` chooses by measurement on a CPU
of this kind. The full side-by-side measurement with percentiles is benchmarks/bench_quantize.py.
"""
from __future__ import annotations

from pathlib import Path

from onnxformer.artifact.cpu import this_cpu
from onnxformer.artifact.manifest import REFERENCE, Latency, Manifest, load_manifest
from onnxformer.runtime.latency import SEQUENCE, interleaved_ms, probe_feeds
from onnxformer.runtime.providers import REGISTRY
from onnxformer.runtime.session import physical_cores

RECORD_SECONDS = 2.0  # timed calls for all variants together (2 rounds, at least 3 calls each per round)


def ratio(model: Path, reference: Path, manifest: Manifest, threads: int | None = None) -> dict[str, float]:
    """Latency of ``model`` and of ``reference``, measured interleaved so that load affects both alike."""
    ms = interleaved_ms({"model": model, "fp32": reference}, probe_feeds(manifest), threads, seconds=3.0)
    return {"ms": ms["model"], "fp32_ms": ms["fp32"], "ratio": ms["model"] / ms["fp32"]}


def record_latencies(directory: Path, threads: int | None = None, seconds: float = RECORD_SECONDS) -> Manifest:
    """Time every variant the CPU runs, side by side, and record each latency with this CPU (atomic write)."""
    manifest = load_manifest(directory)
    runnable = {name: directory / v.file for name, v in manifest.variants.items()
                if not v.components and v.precision in REGISTRY["cpu"].precisions
                and (not v.providers or "cpu" in v.providers or name == REFERENCE)}
    if not runnable:
        return manifest
    feeds = probe_feeds(manifest)
    ms = interleaved_ms(runnable, feeds, threads, seconds)
    cpu, tokens = this_cpu(), int(next(iter(feeds.values())).shape[1]) if feeds else SEQUENCE
    fp32 = ms.get(REFERENCE)
    for name, value in ms.items():
        record = manifest.variants[name]
        entry = Latency(cpu, round(value, 3), 1, tokens, threads or physical_cores(),
                        round(fp32, 3) if fp32 is not None else None)
        record.latency = [m for m in record.latency if m.cpu.key != cpu.key] + [entry]
        if fp32 is not None and name != REFERENCE:  # the ratio build summaries show (and ranking's fallback)
            record.speed_cpu = {"ms": entry.ms, "fp32_ms": entry.fp32_ms, "ratio": round(value / fp32, 3)}
    manifest.save(directory)
    return manifest
