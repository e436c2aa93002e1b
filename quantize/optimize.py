"""`fp32-opt`: transformer fusions — onnxscript's rewriter first, then ONNX Runtime's optimizer.

Graphs from torch.onnx's dynamo exporter are matched by onnxscript's ``ort_fusions`` (ONNX Runtime's own
optimizer fuses no attention on them); ONNX Runtime's ``transformers.optimizer`` then runs over the result,
adding what onnxscript left (and doing every fusion on graphs exported before the dynamo path, whose
attention it knows). The model type, head count and hidden size come from the manifest's ``architecture``;
the optimizer model type from the family registry.

Attention, for BERT-like families (ORT optimizer type "bert": bidirectional, padding-only masks), is onnxscript's
packed ``Attention`` with the padding mask as ORT's 2-D ``mask_index`` (``padding_mask_index``): onnxscript gives the
dynamo graph's mask as a float ``attention_bias``, which ORT's quantizer cannot carry into ``QAttention`` (it would
leave Q/K/V in fp32) — with the 2-D mask, int8 gets ``QAttention`` as on artifacts exported before the dynamo path,
and the rewrite is checked on a padded batch. Other families (rotary, sliding windows, causal embedders) stop at
``MultiHeadAttention``: their bias is more than padding, and their Q, K, V MatMuls quantize like the rest.

The fused graph runs on the CPU and CUDA providers only: TensorRT cannot run ORT's contrib operators, so
TensorRT variants start from the unfused ``fp32`` graph.
"""
from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx

from onnxformer.artifact.families import FAMILIES, find
from onnxformer.artifact.manifest import Architecture
from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.errors import QuantizationError
from onnxformer.quantize.source import MODEL_FILE

ONNXSCRIPT, ORT_OPTIMIZER = "onnxscript.rewriter.ort_fusions", "onnxruntime.transformers.optimizer"
# Contrib operators a fusion produces; their counts go into the manifest (``fused_ops``).
# ORT's Python fusions run on a copy whose initializers above this size hold no bytes (``set_aside``).
SET_ASIDE_BYTES = 1 << 16
_ASIDE = "onnxformer-set-aside-while-fusing"
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
    rewritten, onnxscript_counts = onnxscript_fusions(source, packed=settings["model_type"] == "bert")
    tool = f"{ONNXSCRIPT} + {ORT_OPTIMIZER}"
    if _attention(fused_ops(rewritten)):
        # onnxscript's optimizer has folded the graph already: ORT's session pass (opt level 1: a session built, the
        # model written and read back) changed nothing on any encoder family but cost BERT-base ~6 s of a 20 s fusion.
        model = ort_fusions(rewritten, settings, opt_level=0)
    else:
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".fuse-") as scratch:
            # from a file: ORT's session pass turns an in-memory graph's weights into external initializers, which
            # its shape inference then cannot read (the Unsqueeze axes of MPNet's graph)
            model = ort_fusions(save_onnx(rewritten, Path(scratch) / MODEL_FILE), settings)
        if not _attention(fused_ops(model)) and settings["model_type"] is not None:
            # onnxscript knows the dynamo exporter's attention; ORT's optimizer the TorchScript exporter's (artifacts
            # exported before the dynamo path), which onnxscript's rewrites would hide from it.
            alone = ort_fusions(source, settings)
            if _attention(fused_ops(alone)):
                model, tool, onnxscript_counts = alone, ORT_OPTIMIZER, {}
    counts = fused_ops(model)
    leftover = sorted({n.op_type for n in model.graph.node if n.domain.startswith("ai.onnxruntime._fusion")})
    if leftover:
        raise QuantizationError(f"the fusions left {leftover} (onnxscript's intermediate ops) in the graph of "
                                f"{architecture.model_type!r}; report this model — use the fp32 variant meanwhile")
    if not _attention(counts):
        logging.warning("no attention fusion matched for %s; fp32-opt keeps unfused attention", architecture.model_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_onnx(model, out_dir / MODEL_FILE)
    check_padded(source, path, int(architecture.vocab_size or 1000))
    made_by = {"tool": tool, **settings, "onnxscript_fusions": onnxscript_counts, "fused_ops": counts}
    return path, made_by


def check_padded(source: Path, fused: Path, vocab: int = 1000) -> None:
    """The fused graph must agree with ``source`` on a padded batch (real tokens), not just on the one-text-per-call
    evaluation: a fusion that got the padding mask wrong is an error here, never a variant."""
    import numpy as np

    from onnxformer.runtime.session import create_session

    reference, candidate = create_session(source), create_session(fused)
    names = [i.name for i in reference.get_inputs()]
    rng = np.random.default_rng(0)
    ids = rng.integers(5, max(vocab, 6), size=(3, 24), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 15:], mask[2, 4:] = 0, 0
    feeds = {k: v for k, v in {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}.items()
             if k in names}
    if set(feeds) != set(names):
        return  # not a text encoder's inputs: nothing to pad
    for name, want, got in zip([o.name for o in reference.get_outputs()], reference.run(None, feeds),
                               candidate.run(None, feeds)):
        real = mask.astype(bool) if want.shape[:2] == mask.shape else slice(None)
        delta = float(np.abs(got[real] - want[real]).max())
        if delta > 1e-3 * max(1.0, float(np.abs(want[real]).max())):
            raise QuantizationError(f"the fused graph's {name} differs from fp32 by {delta:.3g} on a padded batch; "
                                    "report this model — use the fp32 variant meanwhile")


def fused_ops(model: Any) -> dict[str, int]:
    """Count of each fused operator in an onnx ModelProto."""
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return {op: n for op, n in sorted(ops.items()) if op in FUSED_OPS and n}


def _attention(counts: dict[str, int]) -> int:
    return counts.get("Attention", 0) + counts.get("MultiHeadAttention", 0) + counts.get("GroupQueryAttention", 0)


def onnxscript_fusions(source: Path, packed: bool) -> tuple[Any, dict[str, int]]:
    """onnxscript's fusions on ``source``: the rewritten graph (an onnx ModelProto, handed on in memory: writing and
    re-reading BERT-base cost ~5 s) and the count of every fusion that matched.

    ``packed``: ``optimize_for_ort`` itself, then the padding mask as ``mask_index``. Otherwise its pipeline without
    the final QKV packing (mirrors ``onnxscript.rewriter.ort_fusions._core.fuse_xformers``; see the module doc).
    """
    import onnx_ir as ir

    model = ir.load(source)
    if packed:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        _, counts = optimize_for_ort(model)
        counts["mask_index"] = padding_mask_index(model)
    else:
        counts = _fusions_to_mha(model)
    return ir.to_proto(model), {k: int(v) for k, v in counts.items() if v}


def padding_mask_index(model: Any) -> int:
    """Feed each packed ``Attention`` the graph's ``attention_mask`` as its 2-D ``mask_index`` instead of the float
    bias onnxscript derived from it (what BERT-like families' bias is: the padding, bidirectionally), dropping
    ``qkv_hidden_sizes`` where Q, K and V are one size (ORT's default). Returns the nodes rewritten; the mask
    subgraph left dead is removed, the packed QKV weights folded. ``check_padded`` proves the result."""
    import onnx_ir as ir
    from onnxscript.optimizer import optimize

    mask = next((v for v in model.graph.inputs if v.name == "attention_mask"), None)
    nodes = [n for n in model.graph if n.op_type == "Attention" and n.domain == "com.microsoft"
             and len(n.inputs) > 5 and n.inputs[5] is not None and (len(n.inputs) < 4 or n.inputs[3] is None)]
    if mask is None or not nodes:
        return 0
    cast = ir.node("Cast", [mask], attributes={"to": ir.DataType.INT32}, name="attention_mask_index")
    cast.outputs[0].name = "attention_mask_index"
    model.graph.insert_before(next(iter(model.graph)), cast)
    for node in nodes:
        sizes = node.attributes.get("qkv_hidden_sizes")
        if sizes is not None and len(set(sizes.as_ints())) == 1:
            node.attributes.pop("qkv_hidden_sizes")
        node.replace_input_with(3, cast.outputs[0])
        node.replace_input_with(5, None)
    optimize(model, input_size_limit=1 << 62, output_size_limit=1 << 62)  # fold Concat(Wq, Wk, Wv); drop dead mask
    return len(nodes)


def _fusions_to_mha(model: Any) -> dict[str, int]:
    """``optimize_for_ort``'s sequence up to MultiHeadAttention (no QKV packing), in place; the fusion counts."""
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
    from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
    from onnxscript.rewriter.ort_fusions.skip_normalization import (
        fuse_skip_layer_normalization,
        fuse_skip_rms_normalization,
    )
    from onnxscript.rewriter.rules.common import _gemm_to_matmul_add

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
    counts["sdpa_via_mha"] = replace_sdpa_by_mha(model)  # attention MHA's patterns missed (ModernBERT, Qwen3)
    optimize(model)
    rewrite(model, ORT_PATTERN_REWRITE_RULES)
    ir.passes.Sequential(common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
                         common.RemoveInitializersFromInputsPass(), common.ShapeInferencePass())(model)
    return counts


def ort_fusions(source: Path | Any, settings: dict[str, Any], opt_level: int | None = None) -> Any:
    """ONNX Runtime's optimizer over ``source`` (a path or an onnx ModelProto; an onnx ModelProto back). ``opt_level``:
    its own default (None: an ORT session's basic optimizations first) or 0 (its Python fusions only).
    ``model_type`` None skips it (ModernBERT: ORT's BERT patterns crash on its bias-free LayerNorms)."""
    from onnxruntime.transformers import optimizer

    if settings["model_type"] is None:
        return source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # fusion chatter is not actionable
    if opt_level != 0 or not isinstance(source, onnx.ModelProto):
        return optimizer.optimize_model(str(source) if isinstance(source, Path) else source, **settings,
                                        opt_level=opt_level, use_gpu=False).model  # a path: see ``fuse``
    # Its shape inference deep-copies the model four times (BERT-base: 4.5 s of a 7.5 s pass): the large weights'
    # bytes are set aside meanwhile and put back after, into the caller's graph and the fused one.
    aside = set_aside(source)
    try:
        fused = optimizer.optimize_model(source, **settings, opt_level=0, use_gpu=False).model
    finally:
        put_back(source, aside)
    put_back(fused, aside)
    return fused


def set_aside(model: onnx.ModelProto, threshold: int = SET_ASIDE_BYTES) -> dict[str, bytes]:
    """Take the bytes of ``model``'s initializers over ``threshold`` out of it (name → bytes). A set-aside tensor keeps
    its name, type and dims and reads as external data from a file that does not exist, so a fusion that needed its
    values fails loudly and never sees zeros. Small constants (scales, shapes) stay in place, and so do the tables
    that Gather nodes read: the embedding fusion compares their values."""
    aside: dict[str, bytes] = {}
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    for tensor in model.graph.initializer:
        if (tensor.data_location == onnx.TensorProto.DEFAULT and len(tensor.raw_data) > threshold
                and tensor.name not in gathered):
            aside[tensor.name] = tensor.raw_data
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.add(key="location", value=_ASIDE)
    return aside


def put_back(model: onnx.ModelProto, aside: dict[str, bytes]) -> None:
    """Restore what ``set_aside`` took; a set-aside tensor whose bytes are not in ``aside`` is a bug, said at once."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL and any(
                e.key == "location" and e.value == _ASIDE for e in tensor.external_data):
            if tensor.name not in aside:
                raise QuantizationError(f"ONNX Runtime's fusions renamed the set-aside weight {tensor.name!r}; "
                                        "report this model — use the fp32 variant meanwhile")
            tensor.raw_data = aside[tensor.name]
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
