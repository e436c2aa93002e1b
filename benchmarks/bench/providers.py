"""Execution providers for benchmarking, on top of the runtime's registry (runtime/providers.py), which is
the one place that knows ORT names, default options and TensorRT option construction (runners.py opens
variants through runtime.loader with it).

This module adds what only a benchmark needs: which providers to sweep, and which TensorRT engine
precisions to build per variant.
"""
from __future__ import annotations

from typing import Sequence

from onnxformer.errors import ProviderError
from onnxformer.runtime.providers import REGISTRY, engine_precisions, provider_names

GPU_PROVIDERS = tuple(name for name, p in REGISTRY.items() if p.needs_gpu)


def resolve(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Short names to benchmark: every available one by default, else exactly those asked for (no fallback:
    a benchmark that silently ran on CPU instead of CUDA would report the wrong thing)."""
    have = [name for name, p in REGISTRY.items() if p.ort_name in available]
    if not requested:
        return have
    wanted = provider_names(list(requested))
    missing = [p for p in wanted if p not in have]
    if missing:
        raise ProviderError(
            f"provider(s) {', '.join(missing)} not available in this onnxruntime (available: {', '.join(have)}); "
            "install onnxruntime-gpu with CUDA/TensorRT for GPU providers, or drop them from --providers"
        )
    return wanted


def tensorrt_precisions(variant_precision: str, trt_major: int = 10) -> list[str]:
    """TensorRT engines to build from a variant: under TensorRT 10 an fp32 graph also yields TensorRT's own fp16
    engine, the setting most TensorRT users try first; under 11 only the graph's precision (runtime.providers)."""
    return engine_precisions(variant_precision, trt_major)
