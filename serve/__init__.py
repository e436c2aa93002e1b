"""Serving: an HTTP server (KServe v2 / Open Inference Protocol, OpenAI embeddings, task endpoints) with
dynamic batching and limits, and a Triton model-repository writer. Importing this package is cheap;
FastAPI, uvicorn and tritonclient load only in the modules that need them.

    from onnxformer.serve.app import create_app      # ASGI app around a Model loader
    from onnxformer.serve.triton import export_triton
"""
from __future__ import annotations
