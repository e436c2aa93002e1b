"""``onnxformer triton --pooled``: the embedding graph with pooling and normalisation inside it, so Triton's
onnxruntime backend answers sentence vectors (``embedding``, FP32 ``[batch, C]``) instead of token states.

Built with ``onnx.helper`` on the shipped variant's graph (external data left where it is): mean or CLS pooling over
``attention_mask`` as ``runtime/pooling.py`` computes it, then L2 normalisation when the manifest says so."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxformer.artifact.manifest import Manifest, TensorSpec
from onnxformer.serve.statuses import ServingError

POOLINGS = ("mean", "cls")
OUTPUT = "embedding"


def pooled_output(manifest: Manifest) -> TensorSpec:
    """The ``embedding`` output the pooled graph has (what the config declares in place of the token states)."""
    check_pooled(manifest)
    states = manifest.output("last_hidden_state")
    assert states is not None  # check_pooled: an embedding model's token states
    return TensorSpec(OUTPUT, "float32", [states.shape[0], states.shape[-1]])


def check_pooled(manifest: Manifest) -> None:
    post = manifest.postprocess
    if manifest.task != "feature-extraction" or manifest.output("last_hidden_state") is None:
        raise ServingError(f"--pooled is for embedding models (feature-extraction); this artifact is {manifest.task}")
    if (post.pooling or "mean") not in POOLINGS:
        raise ServingError(f"--pooled supports {POOLINGS} pooling; this model pools by {post.pooling!r}: "
                           "serve it with --backend python")
    if post.truncate_dim is not None:
        raise ServingError("--pooled does not cut Matryoshka dimensions (truncate_dim); use --backend python")
    if manifest.opset is not None and manifest.opset < 13:
        raise ServingError(f"--pooled needs opset >= 13 (this graph is opset {manifest.opset})")


def add_pooling(graph_path: Path, manifest: Manifest) -> None:
    """Rewrite ``graph_path`` in place: token states → pooled (and normalised) ``embedding``."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise ServingError("--pooled needs the onnx package (pip install 'onnxformer[export]')") from None
    check_pooled(manifest)
    model = onnx.load(str(graph_path), load_external_data=False)  # the weights stay in their files
    g = model.graph
    _free_name(g, OUTPUT)
    const = lambda name, values, dtype=TensorProto.INT64: helper.make_tensor(name, dtype, [len(values)], values)
    g.initializer.extend([const("pool_axis_tokens", [1]), const("pool_axis_last", [-1]),
                          const("pool_eps_count", [1e-9], TensorProto.FLOAT),
                          const("pool_eps_norm", [1e-12], TensorProto.FLOAT),
                          helper.make_tensor("pool_first", TensorProto.INT64, [], [0])])
    nodes = [helper.make_node("Cast", ["last_hidden_state"], ["pool_states"], to=TensorProto.FLOAT)]
    if (manifest.postprocess.pooling or "mean") == "cls":  # right-padded: the first token
        nodes.append(helper.make_node("Gather", ["pool_states", "pool_first"], ["pool_vec"], axis=1))
    else:
        nodes += [helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", ["pool_mask", "pool_axis_last"], ["pool_mask3"]),
                  helper.make_node("Mul", ["pool_states", "pool_mask3"], ["pool_masked"]),
                  helper.make_node("ReduceSum", ["pool_masked", "pool_axis_tokens"], ["pool_sum"], keepdims=0),
                  helper.make_node("ReduceSum", ["pool_mask3", "pool_axis_tokens"], ["pool_count"], keepdims=0),
                  helper.make_node("Max", ["pool_count", "pool_eps_count"], ["pool_count1"]),
                  helper.make_node("Div", ["pool_sum", "pool_count1"], ["pool_vec"])]
    last = "pool_vec"
    if manifest.postprocess.normalize:
        nodes += [helper.make_node("Mul", ["pool_vec", "pool_vec"], ["pool_sq"]),
                  helper.make_node("ReduceSum", ["pool_sq", "pool_axis_last"], ["pool_ss"], keepdims=1),
                  helper.make_node("Sqrt", ["pool_ss"], ["pool_norm"]),
                  helper.make_node("Max", ["pool_norm", "pool_eps_norm"], ["pool_norm1"]),
                  helper.make_node("Div", ["pool_vec", "pool_norm1"], ["pool_unit"])]
        last = "pool_unit"
    nodes.append(helper.make_node("Identity", [last], [OUTPUT]))
    g.node.extend(nodes)
    spec = pooled_output(manifest)
    dims = [d if isinstance(d, str) else int(d) for d in spec.shape]
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, dims))
    onnx.checker.check_model(model)
    onnx.save(model, str(graph_path))


def _free_name(graph: Any, name: str) -> None:
    """Rename an inner value called ``name`` (an exporter may have used it) so the new output can take it."""
    renamed = f"{name}__inner"
    for node in graph.node:
        node.input[:] = [renamed if v == name else v for v in node.input]
        node.output[:] = [renamed if v == name else v for v in node.output]
    for info in graph.value_info:
        if info.name == name:
            info.name = renamed
