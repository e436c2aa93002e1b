"""Versions of every library that shaped an artifact, recorded in the manifest."""
from __future__ import annotations

import platform
from importlib import metadata
from typing import Sequence

LIBRARIES = ("onnxformer", "torch", "transformers", "onnxscript", "onnx", "onnx-ir", "onnxruntime", "onnxruntime-gpu",
             "tokenizers", "sentence-transformers", "numpy", "optimum", "optimum-onnx")


def library_versions(libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Python's version and that of each installed distribution in ``libraries`` (absent ones are left out);
    the benchmark report's environment block passes its own list."""
    versions = {"python": platform.python_version()}
    for name in libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
