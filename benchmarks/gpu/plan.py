"""What the GPU check does, as plain data: benchmark settings, time budget, GPU presence (install: install.py).

Kept free of GPU imports so tests exercise it on CPU.
"""
from __future__ import annotations

import shutil
import subprocess

from onnxformer.benchmarks.harness import Settings
from onnxformer.benchmarks.stats import Budget
from onnxformer.errors import ProviderError

TIME_LIMIT_SECONDS = 8 * 60  # the whole check, install included
GPU_PROVIDERS = ["tensorrt", "cuda"]


def gpu_settings(seconds: float = 1.0, batches: tuple[int, ...] = (1, 8, 32), seqs: tuple[int, ...] = (128,)) -> Settings:
    """TensorRT and CUDA providers vs PyTorch CUDA fp32 and fp16 autocast; no CPU baselines or CPU peers."""
    return Settings(batches=list(batches), seqs=list(seqs), threads=1, budget=Budget(warmup=10, iters=None, seconds=seconds),
                    providers=list(GPU_PROVIDERS), baseline_devices=["cuda"], peers=False, isolate=True)


def seconds_per_config(remaining: float, configs: int, shapes: int, models: int = 1) -> float:
    """Split this model's share of the remaining time over every (configuration, shape, mode), keeping
    2 minutes per model for TensorRT engine builds and loading; never below 0.2 s (5 iterations still run)."""
    usable = max(0.0, remaining / max(1, models) - 120.0)
    return max(0.2, min(2.0, usable / max(1, configs * shapes * 2)))


def check_gpu() -> str:
    """The GPU's name, or an error saying what is missing."""
    if shutil.which("nvidia-smi") is None:
        raise ProviderError("no NVIDIA driver found (nvidia-smi missing): the GPU check needs an NVIDIA GPU")
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise ProviderError(f"nvidia-smi found no usable GPU: {done.stderr.strip() or 'no devices listed'}")
    return done.stdout.strip().splitlines()[0]
