"""`fp32-opt`: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, …).

The model type, head count and hidden size come from the manifest's ``architecture`` (read from the
checkpoint config at export), never from guesses on the graph; ONNX Runtime's optimizer model type
comes from the family registry (``runtime/families.py``). The fused graph runs on the CPU and CUDA
providers only: TensorRT cannot run ORT's contrib operators, so TensorRT variants start from the
unfused ``fp32`` graph.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from onnxformer.errors import QuantizationError
from onnxformer.quantize.source import MODEL_FILE
from onnxformer.runtime.families import FAMILIES, find
from onnxformer.runtime.manifest import Architecture
from onnxformer.runtime.onnx_save import save_onnx


def fusion_settings(architecture: Architecture) -> dict[str, Any]:
    """optimizer.optimize_model keyword arguments for this architecture."""
    family = find(architecture.model_type)
    if family is None or family.optimizer_model_type is None:
        fused = sorted(n for n, f in FAMILIES.items() if f.optimizer_model_type)
        raise QuantizationError(f"no ONNX Runtime fusion recipe for {architecture.model_type!r}; supported: {fused}")
    heads, hidden = architecture.num_heads, architecture.hidden_size
    if not heads or not hidden:
        raise QuantizationError("the manifest's architecture lacks num_heads/hidden_size; re-export the model")
    return {"model_type": family.optimizer_model_type, "num_heads": int(heads), "hidden_size": int(hidden)}


def fuse(source: Path, architecture: Architecture, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Run the fusions on ``source``; return the fused graph's path and how it was made."""
    from onnxruntime.transformers import optimizer

    settings = fusion_settings(architecture)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # fusion chatter is not actionable
    fused = optimizer.optimize_model(str(source), **settings, use_gpu=False)
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    if not counts.get("Attention") and not counts.get("MultiHeadAttention"):
        logging.warning("no attention fusion matched for %s; fp32-opt keeps unfused attention", architecture.model_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_onnx(fused.model, out_dir / MODEL_FILE)
    made_by = {"tool": "onnxruntime.transformers.optimizer", **settings, "fused_ops": counts}
    return path, made_by
