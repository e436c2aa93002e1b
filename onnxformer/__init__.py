"""onnxformer: checkpoint → validated ONNX → quantized variants → torch-free runtime.

The pipeline lives in sub-packages named after its stages:
``onnxformer.export`` → ``onnxformer.quantize`` → ``onnxformer.runtime`` → ``onnxformer.benchmarks``.
Importing this package is cheap: it pulls in no torch, transformers or onnxruntime.
"""
from __future__ import annotations

from onnxformer.errors import OnnxformerError

__version__ = "0.1.0"
__all__ = ["OnnxformerError", "Model", "__version__"]


def __getattr__(name: str):  # lazy: `onnxformer.Model` without importing onnxruntime up front
    if name == "Model":
        from onnxformer.runtime import Model

        return Model
    raise AttributeError(f"module 'onnxformer' has no attribute {name!r}")
