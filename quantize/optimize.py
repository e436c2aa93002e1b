"""`fp32-opt`: transformer fusions — onnxscript's rewriter first, then ONNX Runtime's optimizer.

Graphs from torch.onnx's dynamo exporter are matched by onnxscript's ``ort_fusions`` (ONNX Runtime's own
optimizer fuses no attention on them); ONNX Runtime's ``transformers.optimizer`` then runs over the result,
adding what onnxscript left (and doing every fusion on graphs exported before the dynamo path, whose
attention it knows). The model type, head count and hidden size come from the manifest's ``architecture``;
the optimizer model type from the family registry.

Attention is fused up to ``MultiHeadAttention`` (Q, K, V projections stay MatMuls): onnxscript's last step
packs them into one ``Attention`` with ``qkv_hidden_sizes`` and a float ``attention_bias``, which ONNX
Runtime's int8 quantizer cannot turn into ``QAttention`` (it leaves the whole projection in fp32), while
the three MatMuls quantize like every other. Measured on all-MiniLM-L6-v2 (one run, 2-core Xeon, loaded): int8
of the MultiHeadAttention graph ran 1.38× (1×128) and 1.17× (8×128) faster than int8 of the packed one.

The fused graph runs on the CPU and CUDA providers only: TensorRT cannot run ORT's contrib operators, so
TensorRT variants start from the unfused ``fp32`` graph.
"""
from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path
from typing import Any

from onnxformer.errors import QuantizationError
from onnxformer.quantize.source import MODEL_FILE
from onnxformer.runtime.families import FAMILIES, find
from onnxformer.runtime.manifest import Architecture
from onnxformer.runtime.onnx_save import save_onnx

# Contrib operators a fusion produces; their counts go into the manifest (``fused_ops``).
FUSED_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "SkipLayerNormalization",
             "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "EmbedLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "BiasSplitGelu", "RotaryEmbedding", "FusedMatMul")


def fusion_settings(architecture: Architecture) -> dict[str, Any]:
    """optimizer.optimize_model keyword arguments for this architecture (``model_type`` None: onnxscript only)."""
    family = find(architecture.model_type)
    if family is None:
        known = sorted(n for n, f in FAMILIES.items() if not f.generative)
        raise QuantizationError(f"no fusion recipe for {architecture.model_type!r}; supported: {known}")
    heads, hidden = architecture.num_heads, architecture.hidden_size
    if not heads or not hidden:
        raise QuantizationError("the manifest's architecture lacks num_heads/hidden_size; re-export the model")
    return {"model_type": family.optimizer_model_type, "num_heads": int(heads), "hidden_size": int(hidden)}


def fuse(source: Path, architecture: Architecture, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Run the fusions on ``source``; return the fused graph's path and how it was made."""
    settings = fusion_settings(architecture)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".fuse-") as scratch:
        rewritten = Path(scratch) / MODEL_FILE
        onnxscript_counts = onnxscript_fusions(source, rewritten)
        model = ort_fusions(rewritten, settings)
    counts = {op: n for op, n in sorted(collections.Counter(n.op_type for n in model.graph.node).items())
              if op in FUSED_OPS and n}
    if not counts.get("Attention") and not counts.get("MultiHeadAttention"):
        logging.warning("no attention fusion matched for %s; fp32-opt keeps unfused attention", architecture.model_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_onnx(model, out_dir / MODEL_FILE)
    made_by = {"tool": "onnxscript.rewriter.ort_fusions + onnxruntime.transformers.optimizer", **settings,
               "onnxscript_fusions": onnxscript_counts, "fused_ops": counts}
    return path, made_by


def onnxscript_fusions(source: Path, out: Path) -> dict[str, int]:
    """onnxscript's ``optimize_for_ort`` pipeline without its final QKV packing (see the module doc); returns the
    count of every fusion that matched. Mirrors ``onnxscript.rewriter.ort_fusions._core.optimize_for_ort``."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES, shape_optimization
    from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
    from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
    from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu
    from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
    from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
    from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
    from onnxscript.rewriter.ort_fusions.skip_normalization import (fuse_skip_layer_normalization,
                                                                     fuse_skip_rms_normalization)
    from onnxscript.rewriter.rules.common import _gemm_to_matmul_add

    model = ir.load(source)
    rewrite(model, [_gemm_to_matmul_add.gemm_to_matmul_add_rule])
    common.ShapeInferencePass()(model)
    optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimize(model)
    counts = {name: fusion(model) for name, fusion in (
        ("erf_gelu", fuse_erfgelu), ("rms_normalization", fuse_rms_normalization),
        ("skip_layer_normalization", fuse_skip_layer_normalization),
        ("skip_rms_normalization", fuse_skip_rms_normalization))}
    common.CommonSubexpressionEliminationPass()(model)
    counts["sdpa"] = fuse_sdpa(model, apply_shape_inference=True)
    counts.update({name: fusion(model) for name, fusion in (
        ("mha1", fuse_mha1), ("mha2", fuse_mha2), ("mha_scale", fuse_mha_scale), ("mha_bias", fuse_mha_bias),
        ("gelu", fuse_gelu), ("bias_gelu", fuse_bias_gelu))})
    optimize(model)
    rewrite(model, ORT_PATTERN_REWRITE_RULES)
    ir.passes.Sequential(common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
                         common.RemoveInitializersFromInputsPass(), common.ShapeInferencePass())(model)
    ir.save(model, out)
    return {k: int(v) for k, v in counts.items() if v}


def ort_fusions(source: Path, settings: dict[str, Any]) -> Any:
    """ONNX Runtime's optimizer over ``source`` (an onnx ModelProto back); ``model_type`` None skips it."""
    import onnx
    from onnxruntime.transformers import optimizer

    if settings["model_type"] is None:
        return onnx.load(str(source))
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # fusion chatter is not actionable
    return optimizer.optimize_model(str(source), **settings, use_gpu=False).model
