"""Install commands for the GPU venv. Standard library only: run_gpu.sh runs this with the system python3,
before the venv has anything installed."""
from __future__ import annotations

from pathlib import Path

EXTRAS = "gpu,export,demo"  # onnxruntime-gpu + tensorrt-cu12; torch/transformers/optimum; the MiniLM checkpoint


def install_commands(python: str, repo: str | Path, use_uv: bool) -> list[list[str]]:
    """Commands that turn a fresh venv into a GPU benchmark environment.

    PyPI's Linux torch wheel is the CUDA build, so no extra index is needed. onnxruntime (CPU) and
    onnxruntime-gpu install into the same module directory; if anything pulled the CPU one in,
    it is removed and the GPU one reinstalled over it.
    """
    pip = ["uv", "pip", "install", "--python", python] if use_uv else [python, "-m", "pip", "install", "-q"]
    uninstall = ["uv", "pip", "uninstall", "--python", python] if use_uv else [python, "-m", "pip", "uninstall", "-y", "-q"]
    return [
        [*pip, "--upgrade", "pip"] if not use_uv else [*pip, "pip"],
        [*pip, "torch"],
        [*pip, "-e", f"{repo}[{EXTRAS}]"],
        [*uninstall, "onnxruntime"],
        [*pip, "--force-reinstall", "--no-deps", "onnxruntime-gpu"],
    ]
