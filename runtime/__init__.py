"""Torch-free runtime: onnxruntime + numpy + tokenizers only.

    from onnxformer.runtime import Model
    model = Model.load("out/")
    vectors = model.embed(["hello world"])
"""
from __future__ import annotations

from onnxformer.artifact.manifest import load_manifest
from onnxformer.runtime.model import Model

__all__ = ["Model", "load_manifest"]
