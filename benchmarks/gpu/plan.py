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
    """TensorRT and CUDA providers vs the PyTorch CUDA peers (fp32, fp16 autocast, .half(), SDPA, torch.compile:
    peers.py); no CPU baselines or CPU peers."""
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


# --- what can run here: each missing piece becomes "not measured: why" -----------------------------------------


def tiny_model_bytes() -> bytes:
    """A one-node float graph (y = x + x) to start a provider on."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "start-check", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def provider_problem(ort_name: str, options: dict | None = None) -> str | None:
    """Why ``ort_name`` does not really start here (None: a tiny session runs on it first in line).
    ONNX Runtime falls back to the CPU silently when a provider fails to initialise: that is a failure here."""
    import numpy as np
    import onnxruntime as ort

    if ort_name not in ort.get_available_providers():
        return f"{ort_name} is not in this onnxruntime build ({ort.__version__}; onnxruntime-gpu has it)"
    try:
        chain = [(ort_name, options or {})] + (["CPUExecutionProvider"] if ort_name != "CPUExecutionProvider" else [])
        session = ort.InferenceSession(tiny_model_bytes(), providers=chain)
        session.run(None, {"x": np.ones((1, 4), np.float32)})
    except Exception as e:  # ORT's pybind errors share no base class below Exception
        return f"{ort_name} failed to start: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    first = session.get_providers()[0]
    if first != ort_name:
        return f"{ort_name} did not start (onnxruntime fell back to {first}: CUDA/cuDNN libraries missing or mismatched)"
    return None


def tensorrt_library() -> tuple[int | None, str | None]:
    """(the TensorRT major ONNX Runtime's EP links, None) when that libnvinfer loads, else (None, why)."""
    import ctypes

    from onnxformer.runtime.providers import TENSORRT_LIBRARIES, tensorrt_major

    major = tensorrt_major()
    name = TENSORRT_LIBRARIES.get(major, f"libnvinfer.so.{major}")
    try:
        ctypes.CDLL(name)
    except OSError:
        return None, (f"no TensorRT libraries ({name}, which this onnxruntime's TensorRT EP links, is not on the "
                      "loader path; " + " or ".join(TENSORRT_LIBRARIES.values()) + " would come from the tensorrt wheels)")
    return major, None
