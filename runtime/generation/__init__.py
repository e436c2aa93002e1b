"""Torch-free text generation: decoder-only and encoder-decoder models with a KV cache.

    from onnxformer.runtime.generation import Generator
    gen = Generator.load("out/")
    gen.generate(["Once upon a time"], max_new_tokens=32)
    for piece in gen.stream("Once upon a time"): print(piece, end="")
"""
from __future__ import annotations

from onnxformer.runtime.generation.generator import Completion, Generator, Run
from onnxformer.runtime.generation.options import GenerationOptions

__all__ = ["Completion", "GenerationOptions", "Generator", "Run"]
