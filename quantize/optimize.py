"""`fp32-opt`: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu, …).

The model type, head count and hidden size come from the manifest's ``architecture`` (read from the
checkpoint config at export), never from guesses on the graph. The fused graph runs on the CPU and
CUDA providers only: TensorRT cannot run ORT's contrib operators, so TensorRT variants start from the
unfused ``fp32`` graph.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from onnxformer.errors import QuantizationError
from onnxformer.quantize.source import MODEL_FILE, save_model

VARIANT = "fp32-opt"
PROVIDERS = ["cuda", "cpu"]
# Every encoder family we export is BERT-shaped for ORT's fusion patterns (BertOnnxModel).
_ORT_MODEL_TYPE = {family: "bert" for family in (
    "albert", "bert", "camembert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta",
)}


def fusion_settings(architecture: dict[str, Any]) -> dict[str, Any]:
    """optimizer.optimize_model keyword arguments for this architecture."""
    family = architecture["model_type"]
    if family not in _ORT_MODEL_TYPE:
        raise QuantizationError(f"no ONNX Runtime fusion recipe for {family!r}; supported: {sorted(_ORT_MODEL_TYPE)}")
    heads, hidden = architecture.get("num_heads"), architecture.get("hidden_size")
    if not heads or not hidden:
        raise QuantizationError("the manifest's architecture lacks num_heads/hidden_size; re-export the model")
    return {"model_type": _ORT_MODEL_TYPE[family], "num_heads": int(heads), "hidden_size": int(hidden)}


def fuse(source: Path, architecture: dict[str, Any], out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Run the fusions on ``source``; return the fused graph's path and how it was made."""
    from onnxruntime.transformers import optimizer

    settings = fusion_settings(architecture)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # fusion chatter is not actionable
    fused = optimizer.optimize_model(str(source), **settings, use_gpu=False)
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    if not counts.get("Attention") and not counts.get("MultiHeadAttention"):
        logging.warning("no attention fusion matched for %s; fp32-opt keeps unfused attention", architecture["model_type"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(fused.model, out_dir / MODEL_FILE)
    made_by = {"tool": "onnxruntime.transformers.optimizer", "from": "fp32", **settings, "fused_ops": counts}
    return path, made_by
