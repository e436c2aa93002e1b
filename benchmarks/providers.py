"""Execution providers for benchmarking: short names, availability, and provider options (plain data).

Option building is pure so it is tested on CPU; only creating the session needs the GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from onnxformer.errors import ProviderError

FULL_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in FULL_NAMES.items()}
GPU_PROVIDERS = ("tensorrt", "cuda")


def short_name(provider: str) -> str:
    name = SHORT_NAMES.get(provider, provider.lower())
    if name not in FULL_NAMES:
        raise ProviderError(f"unknown provider {provider!r}; choose from {', '.join(FULL_NAMES)}")
    return name


def resolve(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Short names to benchmark: every supported available provider by default, else exactly those asked for."""
    have = [SHORT_NAMES[p] for p in available if p in SHORT_NAMES]
    if not requested:
        return [p for p in FULL_NAMES if p in have]
    wanted = [short_name(p) for p in requested]
    missing = [p for p in wanted if p not in have]
    if missing:
        raise ProviderError(
            f"provider(s) {', '.join(missing)} not available in this onnxruntime (available: {', '.join(have)}); "
            "install onnxruntime-gpu with CUDA/TensorRT for GPU providers, or drop them from --providers"
        )
    return wanted


def trt_profile(input_names: Sequence[str], max_batch: int, max_seq: int, opt: tuple[int, int] = (1, 128)) -> dict[str, str]:
    """Explicit TensorRT shape profiles, so one engine covers every benchmarked shape (no rebuild per shape)."""
    def shapes(b: int, t: int) -> str:
        return ",".join(f"{name}:{b}x{t}" for name in input_names)

    return {
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(min(opt[0], max_batch), min(opt[1], max_seq)),
        "trt_profile_max_shapes": shapes(max_batch, max_seq),
    }


def provider_options(provider: str, precision: str, *, cache_dir: Path | None = None,
                     input_names: Sequence[str] = (), max_batch: int = 32, max_seq: int = 512,
                     device_id: int = 0) -> tuple[str, dict[str, Any]]:
    """(full provider name, options) for one variant. ``precision`` is the TensorRT build precision:
    fp32, fp16 (TensorRT casts an fp32 graph itself) or int8 (a QDQ graph's scales are used as-is)."""
    name = short_name(provider)
    if name == "cpu":
        return FULL_NAMES[name], {}
    if name == "cuda":
        return FULL_NAMES[name], {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": precision in ("fp16", "int8"),  # int8 engines fall back to fp16, not fp32, per layer
        "trt_int8_enable": precision == "int8",
        "trt_max_workspace_size": 4 << 30,
    }
    if cache_dir is not None:  # engines take minutes to build; the cache makes reruns start in seconds
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
    if input_names:
        options.update(trt_profile(input_names, max_batch, max_seq))
    return FULL_NAMES[name], options


def tensorrt_precisions(variant_precision: str) -> list[str]:
    """TensorRT build precisions to try for a variant: an fp32 graph yields fp32 and fp16 engines."""
    if variant_precision == "fp32":
        return ["fp32", "fp16"]
    if variant_precision.startswith("int8"):
        return ["int8"]
    return []  # fp16 graphs are for CUDA; TensorRT builds its own fp16 from the fp32 graph
