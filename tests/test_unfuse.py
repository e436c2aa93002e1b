"""CPU int8 graphs expand SkipLayerNormalization (quantize/unfuse.py); fusion sets large weights aside safely."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxformer.errors import QuantizationError
from onnxformer.quantize import optimize
from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact
from onnxformer.quantize.unfuse import expand_skip_layer_norms


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _skip_norm_graph(opset: int, bias: bool, sum_output: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if bias else [])
    outputs = ["y"] + (["", "", "sum"] if sum_output else [])
    node = helper.make_node("SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=1e-5)
    weights = [numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), name) for name in inputs[2:]]
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 3, 16]) for n in ("x", "skip")]
    out = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("y", "sum")[:1 + sum_output]]
    graph = helper.make_graph([node], "g", io, out, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("bias,sum_output", [(False, False), (True, False), (True, True), (False, True)])
def test_expanded_skip_layer_norm_computes_the_same(bias, sum_output):
    fused = _skip_norm_graph(18, bias, sum_output)
    expanded = onnx.ModelProto()
    expanded.CopyFrom(fused)
    assert expand_skip_layer_norms(expanded) == 1
    ops = collections.Counter(n.op_type for n in expanded.graph.node)
    assert ops == {"Add": 1 + bias, "LayerNormalization": 1}
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((2, 3, 16)).astype(np.float32) for n in ("x", "skip")}
    want = _run(fused, feeds)
    got = _run(expanded, feeds)
    assert len(got) == len(want) == 1 + sum_output
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_expansion_needs_opset_17():
    model = _skip_norm_graph(16, True, False)
    assert expand_skip_layer_norms(model) == 0
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization"]


def test_cpu_int8_has_no_skip_layer_norm_and_fp32_opt_keeps_it(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    optimize_artifact(art)
    fused = _ops(art / "fp32-opt" / "model.onnx")
    assert fused["SkipLayerNormalization"] == 4  # CUDA variants start from this graph: the fused op stays
    record = quantize_artifact(art, "int8").record
    ops = _ops(art / "int8" / "model.onnx")
    assert ops["SkipLayerNormalization"] == 0
    assert ops["LayerNormalization"] == fused["LayerNormalization"] + 4
    assert ops["QAttention"] == 2
    assert record.made_by["skip_layer_norm"].startswith("Add + LayerNormalization")
    assert record.fidelity["min_cosine"] > 0.99  # measured on the expanded graph, the one published


def test_weights_set_aside_are_put_back_and_a_renamed_one_is_an_error():
    model = _skip_norm_graph(18, True, False)
    big = numpy_helper.from_array(np.arange(40000, dtype=np.float32), "big")
    model.graph.initializer.append(big)
    aside = optimize.set_aside(model)
    assert set(aside) == {"big"}  # the 16-float norms stay in place
    stripped = next(t for t in model.graph.initializer if t.name == "big")
    assert not stripped.raw_data and stripped.data_location == onnx.TensorProto.EXTERNAL
    with pytest.raises(Exception):  # noqa: B017  (whatever onnx raises: the point is it raises)
        numpy_helper.to_array(stripped)  # a fusion reading it fails loudly, never sees zeros
    optimize.put_back(model, aside)
    np.testing.assert_array_equal(numpy_helper.to_array(stripped), np.arange(40000, dtype=np.float32))
    again = optimize.set_aside(model)
    next(t for t in model.graph.initializer if t.name == "big").name = "renamed"
    with pytest.raises(QuantizationError, match="renamed the set-aside weight 'renamed'"):
        optimize.put_back(model, again)


def test_int8_build_does_each_expensive_step_once(tiny_artifact, copy_artifact, monkeypatch):
    """Issue 15's build time: the plain int8 graph is quantized once (the budget loop starts from it), ORT's optimizer
    skips its session pass on a graph onnxscript already fused, and the CPU latency is timed once, side by side."""
    from onnxruntime.transformers import optimizer

    from onnxformer.quantize import int8, speed

    calls: dict[str, list] = {"quantize": [], "opt_level": [], "ratio": []}
    real_quantize, real_optimize = int8.quantize, optimizer.optimize_model
    monkeypatch.setattr(int8, "quantize", lambda *a, **k: calls["quantize"].append(a[2]) or real_quantize(*a, **k))
    monkeypatch.setattr(optimizer, "optimize_model",
                        lambda *a, **k: calls["opt_level"].append(k.get("opt_level")) or real_optimize(*a, **k))
    monkeypatch.setattr(speed, "ratio", lambda *a, **k: calls["ratio"].append(a) or pytest.fail("timed twice"))
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    record = quantize_artifact(art, "int8").record
    assert record.made_by["smoothing"]["method"] == "skipped"  # plain int8 of the tiny model is within 0.999
    assert [p.name for p in calls["quantize"]] == ["all"]
    assert calls["opt_level"] == [0] and not calls["ratio"]
    assert record.speed_cpu["ratio"] == pytest.approx(record.latency[-1].ms / record.latency[-1].fp32_ms, rel=1e-2)
