"""CPU int8 graphs keep residual adds and layer norms as ONNX's own ``Add`` + ``LayerNormalization``.

ONNX Runtime's CPU ``SkipLayerNormalization`` kernel (com.microsoft) is a scalar loop per row, while
``LayerNormalization`` is vectorized: on a 128 × 768 activation the fused op took 250 µs against 44 µs for Add +
LayerNormalization (2 threads, ORT 1.32, Xeon with AVX-512), and expanding the 24 fused nodes of BERT-base's int8
graph made a 1 × 128 call 15 % faster (32.8 → 28.0 ms, interleaved in one process). ORT's session-level
``SkipLayerNormFusion`` does not re-fuse the expanded form. The fp32-opt graph keeps the fused op: it is also the
source of the CUDA variants, where the fused kernel is the fast one.
"""
from __future__ import annotations

from typing import Any

import onnx
from onnx import helper

SKIP_LAYER_NORM = "SkipLayerNormalization"
MS_DOMAIN = "com.microsoft"
LAYER_NORM_OPSET = 17  # the first opset with LayerNormalization


def expand_skip_layer_norms(model: onnx.ModelProto) -> int:
    """Rewrite every ``SkipLayerNormalization`` of ``model`` (in place) as Add (input + skip), Add (bias, when it has
    one) and ``LayerNormalization``; its optional sum output becomes the sum itself. Returns the nodes rewritten: none
    on a graph older than opset 17, or for a node whose mean / inverse-std outputs something reads."""
    if _default_opset(model) < LAYER_NORM_OPSET:
        return 0
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    nodes, count = [], 0
    for node in model.graph.node:
        expanded = (_expand(node, count, read) if node.op_type == SKIP_LAYER_NORM and node.domain == MS_DOMAIN
                    else None)
        if expanded is None:
            nodes.append(node)
            continue
        nodes.extend(expanded)
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def _expand(node: onnx.NodeProto, index: int, read: set[str]) -> list[onnx.NodeProto] | None:
    inputs = list(node.input) + [""] * (5 - len(node.input))
    outputs = [node.output[0]] + [o if o in read else "" for o in node.output[1:]] + [""] * (4 - len(node.output))
    if outputs[1] or outputs[2]:
        return None  # its mean / inverse std are read: kept fused rather than re-derived
    x, skip, gamma, beta, bias = inputs[:5]
    epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
    prefix = f"{node.name or SKIP_LAYER_NORM}_expanded{index}"
    total = outputs[3] if outputs[3] and not bias else f"{prefix}_sum"
    added: list[Any] = [helper.make_node("Add", [x, skip], [total], name=f"{prefix}_add")]
    if bias:
        total_with_bias = outputs[3] or f"{prefix}_sum_bias"
        added.append(helper.make_node("Add", [total, bias], [total_with_bias], name=f"{prefix}_bias"))
        total = total_with_bias
    norm_inputs = [total, gamma] + ([beta] if beta else [])
    added.append(helper.make_node("LayerNormalization", norm_inputs, [outputs[0]], name=f"{prefix}_norm", axis=-1,
                                  epsilon=epsilon))
    return added


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
