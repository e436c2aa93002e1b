"""The environment block of every report: CPU, flags, cores, GPU and the version of every library involved."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from onnxformer.artifact.cpu import FLAGS as CPU_FLAGS  # the flags that decide ONNX Runtime's and PyTorch's kernels
from onnxformer.artifact.cpu import this_cpu
from onnxformer.export.versions import library_versions  # the one version reader (imports no torch)

LIBRARIES = (
    "onnxformer", "onnxruntime", "onnxruntime-gpu", "numpy", "tokenizers", "torch", "transformers", "optimum",
    "optimum-onnx", "onnx", "tensorrt", "tensorrt-cu12", "sentence-transformers", "safetensors", "matplotlib",
    "rich", "psutil",
)


def cpu_info() -> dict[str, Any]:
    from onnxformer.runtime.session import physical_cores

    cpu = this_cpu()  # non-Linux: model from platform, flags unknown (reported as False)
    model, flags = cpu.model, set(cpu.flags)

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": affinity,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def gpu_info() -> list[dict[str, str]]:
    """One entry per NVIDIA GPU from nvidia-smi; empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return [{"error": done.stderr.strip() or f"nvidia-smi exited {done.returncode}"}]
    keys = ("name", "driver", "memory_total", "compute_capability")
    return [dict(zip(keys, (c.strip() for c in line.split(",")))) for line in done.stdout.strip().splitlines()]


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "memory_total_gb": _memory_total_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(LIBRARIES),  # installed ones only
        "onnxruntime_providers": ort.get_available_providers(),
    }


def _memory_total_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None
