"""Versions of every library that shaped an artifact, recorded in the manifest."""
from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("onnxformer", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
             "onnxruntime-gpu", "tokenizers", "sentence-transformers", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
