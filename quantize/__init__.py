"""Quantize stage: fused fp32, guarded fp16 and int8 variants, each measured under an accuracy budget,
and fp16 / int8 / int4 variants of generative models, measured teacher-forced.

Variants (names as they appear in the artifact directory and its manifest), one recipe class each
(``recipes.py``, the registry; the contract is ``recipe.py``):

- ``fp32-opt``: ONNX Runtime transformer fusions of ``fp32`` (CPU, CUDA).
- ``fp16``: guarded float16 of ``fp32-opt`` (CUDA); ``fp16-trt``: of ``fp32`` (TensorRT).
- ``int8``: dynamic int8 of ``fp32-opt`` (CPU).
- ``int8-static``: calibrated static QDQ int8 of ``fp32-opt`` (CPU).
- ``int8-trt``: symmetric static QDQ int8 of ``fp32`` (TensorRT).
- generative ``fp16`` (CUDA, CPU), ``int8`` and ``int4`` (CPU) of every graph of ``fp32``.

Entry points: ``optimize_artifact`` and ``quantize_artifact`` (``pipeline.py``), ``quantize_generative``
(``generative.py``), the CLI (``cli.py``), and ``quantize_stage`` for ``onnxformer build`` (``stage.py``).
"""
from __future__ import annotations

__all__ = ["optimize_artifact", "quantize_artifact"]


def __getattr__(name: str):  # lazy: importing the package must stay cheap for the CLI
    if name in __all__:
        from onnxformer.quantize import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
