"""The TensorRT variants are strongly typed graphs (TensorRT 11 builds nothing else): every tensor's dtype is in
the ONNX file. fp16-trt: fp16 everywhere except where the overflow guard keeps nodes fp32, with Casts at every
boundary; int8-trt: explicit, symmetric Q/DQ around every quantized MatMul. Checked on CPU, dtype by dtype."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto
from test_quantize import loud_artifact, overflow_artifact  # noqa: F401  (fixtures)

from onnxformer.quantize import fp16
from onnxformer.quantize.pipeline import quantize_artifact

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of ``model`` (inputs, initializers, inferred intermediates, outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:  # Constant nodes' outputs
        if node.op_type == "Constant":
            types[node.output[0]] = onnx.helper.get_attribute_value(node.attribute[0]).data_type
    return types


@pytest.fixture(scope="module")
def fp16_trt(overflow_artifact, tmp_path_factory):  # noqa: F811
    import shutil

    art = tmp_path_factory.mktemp("typed") / "art"
    shutil.copytree(overflow_artifact, art)
    record = quantize_artifact(art, "fp16", target="tensorrt", budget=0.9).record
    return onnx.load(str(art / "fp16-trt" / "model.onnx")), record


def test_fp16_trt_is_typed_fp16_with_guarded_nodes_fp32(fp16_trt):
    model, record = fp16_trt
    assert record.providers == ["tensorrt"] and record.made_by["from"] == "fp32"
    types = dtypes(model)
    g = model.graph
    assert all(types[o.name] == FLOAT for o in g.output)  # callers see fp32
    assert not {n.op_type for n in g.node} & {"Attention", "SkipLayerNormalization", "BiasGelu"}  # TensorRT parses it
    guarded = set(record.made_by["guard"]["fp32_nodes"])
    assert guarded, "the overflow artifact needs the guard"
    missing = [t for n in g.node for t in (*n.input, *n.output) if t and t not in types]
    assert not missing, f"untyped tensors: {missing[:5]}"
    for node in g.node:
        floats = [types[t] for t in (*node.input, *node.output) if t and types[t] in (FLOAT, HALF)]
        if node.op_type == "Cast":
            continue
        if node.name in guarded or node.op_type in fp16.FRAGILE_OPS:
            assert set(floats) <= {FLOAT}, (node.name, node.op_type, floats)  # kept fp32, as the guard said
        elif node.op_type in ("MatMul", "Gemm", "Softmax", "LayerNormalization", "Gelu", "Erf", "Add", "Mul"):
            assert set(floats) <= {HALF} or not floats, (node.name, node.op_type, floats)  # the rest runs in fp16
    # A node's float tensors are all one type (checked above), so every fp32/fp16 boundary is a Cast; none is a no-op.
    for node in g.node:
        if node.op_type == "Cast" and types.get(node.input[0]) in (FLOAT, HALF):
            to = onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
            assert to != types[node.input[0]] or to not in (FLOAT, HALF), node.name
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    assert sum(1 for n in matmuls if types[n.output[0]] == HALF) > len(matmuls) // 2


def test_int8_trt_is_explicit_symmetric_qdq(loud_artifact, tmp_path):  # noqa: F811
    import shutil

    import numpy as np

    art = tmp_path / "art"
    shutil.copytree(loud_artifact, art)
    record = quantize_artifact(art, "int8", mode="static", target="tensorrt", budget=0.05).record
    model = onnx.load(str(art / "int8-trt" / "model.onnx"))
    g, types = model.graph, dtypes(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    inits = {i.name: i for i in g.initializer}
    qs = [n for n in g.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:  # Q → DQ pairs only: int8 never leaks into a float op
        assert types[q.output[0]] == TensorProto.INT8
        assert all(c.op_type == "DequantizeLinear" for c in consumers.get(q.output[0], []))
        zp = onnx.numpy_helper.to_array(inits[q.input[2]])
        assert zp.dtype == np.int8 and not zp.any()  # symmetric, as TensorRT requires
    for dq in (n for n in g.node if n.op_type == "DequantizeLinear"):
        assert types[dq.output[0]] == FLOAT and types[dq.input[0]] == TensorProto.INT8
    excluded = set(record.made_by["budget"]["excluded_nodes"])
    for mm in (n for n in g.node if n.op_type == "MatMul" and n.name not in excluded):
        fed = [producer.get(t) for t in mm.input]
        assert all(p is not None and p.op_type == "DequantizeLinear" for p in fed), mm.name  # explicit int8 GEMM
