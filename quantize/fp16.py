"""FP16 with a measured overflow guard.

1. Guard inputs: the longest allowed sequence, one token repeated to the limit, a heavily padded
   batch, and the calibration texts.
2. Activation ranges: ORT's MinMax calibrator records min/max of every float tensor (node inputs
   and outputs) of the fp32 graph on those inputs (after ORT's symbolic shape inference, so the
   contrib operators' tensors are seen too).
3. Nodes that read or write a tensor beyond half the fp16 range (overflow, with 2× headroom for
   inputs we did not try) or whose tensor lives entirely below fp16's smallest normal (it would
   flush to zero) stay fp32, as do known-fragile operator types (hand-decomposed LayerNorm
   statistics). ONNX Runtime's float16 converter does the rest, with fp32 inputs/outputs kept.
4. Proof: the fp16 graph runs on the guard inputs and every output must be finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.errors import QuantizationError
from onnxformer.quantize.calibration import TextReader
from onnxformer.quantize.fidelity import Feeds, evaluation_feeds, run_model, tokenizer
from onnxformer.quantize.shapes import annotate
from onnxformer.quantize.source import MODEL_FILE

FP16_MAX = 65504.0
FP16_TINY = 6.104e-05  # smallest normal fp16
MASK_FILL = -1.0e4  # attention-mask fill finite in fp16 (see soften_mask_fills)
HEADROOM = 2.0
# Decomposed LayerNorm statistics (x² summed over the hidden size) overflow fp16 long before x does.
FRAGILE_OPS = ("Pow", "ReduceMean", "ReduceSumSquare", "Sqrt", "Reciprocal")
# Fused normalizations compute x² internally; where a kernel keeps those statistics in fp16 (ORT's CPU
# kernels do), inputs beyond √(65504 / headroom) overflow them: such nodes stay fp32.
NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
            "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization")


def guard_feeds(directory: Path, manifest: Manifest, calibration: Sequence[str]) -> list[Feeds]:
    """Inputs chosen to push activations to their extremes, plus ordinary text."""
    tok = tokenizer(directory, manifest)
    limit = tok.max_length
    long_text = " ".join(list(calibration) * (1 + limit // max(1, len(" ".join(calibration).split()))))
    extremes = [[long_text], [" ".join(["the"] * limit)], [long_text, "ok"]]  # last: row 2 is nearly all padding
    feeds = [evaluation_feeds(directory, manifest, batch, tok)[0] if len(batch) == 1
             else tok.encode(batch, truncate=True).feeds for batch in extremes]
    return feeds + evaluation_feeds(directory, manifest, calibration, tok)


def activation_ranges(typed: Path, feeds: list[Feeds], work: Path) -> dict[str, float]:
    """max |value| of every float tensor of ``typed`` (a graph with value_info) over ``feeds`` (ORT's MinMax calibrator)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(typed, None, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(TextReader(feeds))
    ranges = calibrator.compute_data()
    return {name: float(max(abs(np.min(r.range_value[0])), abs(np.max(r.range_value[1]))))
            for name, r in ranges.items()}


def guarded_nodes(model: onnx.ModelProto, ranges: dict[str, float]) -> dict[str, str]:
    """node name → why it stays fp32."""
    limit, stats_limit = FP16_MAX / HEADROOM, (FP16_MAX / HEADROOM) ** 0.5
    weights = _weight_ranges(model)  # a weight beyond fp16's range would be clamped by the converter
    blocked = {}
    for node in model.graph.node:
        values = [ranges[t] if t in ranges else weights[t] for t in (*node.input, *node.output)
                  if t in ranges or t in weights]
        inputs = [ranges[t] for t in node.input if t in ranges]
        if any(v > limit for v in values):
            blocked[node.name] = f"|x| up to {max(values):.4g} > {limit:.0f}"
        elif node.op_type in NORM_OPS and any(v > stats_limit for v in inputs):
            blocked[node.name] = f"normalizes |x| up to {max(inputs):.4g}: x² would overflow fp16 statistics"
        elif values and all(0.0 < v < FP16_TINY for v in values):
            blocked[node.name] = f"|x| at most {max(values):.3g}, below fp16's smallest normal"
    return blocked


def index_math_nodes(model: onnx.ModelProto) -> list[str]:
    """Float arithmetic whose result is cast to an integer (T5's relative-position buckets: Cast → Div → Log →
    Mul → Cast to int64). In fp16 its rounding moves positions into other buckets, so these nodes stay fp32."""
    producer = {out: node for node in model.graph.node for out in node.output}
    ints = {onnx.TensorProto.INT32, onnx.TensorProto.INT64}
    found: set[str] = set()

    def back(tensor: str) -> None:  # up to (and including) the Cast that made the value float
        node = producer.get(tensor)
        if node is None or node.name in found:
            return
        found.add(node.name)
        if node.op_type != "Cast" or onnx.helper.get_node_attr_value(node, "to") in ints:
            for name in node.input:
                back(name)

    for node in model.graph.node:
        if node.op_type == "Cast" and onnx.helper.get_node_attr_value(node, "to") in ints:
            back(node.input[0])
    return sorted(found)


def soften_mask_fills(source: Path, out: Path) -> tuple[Path, int]:
    """``source`` with every scalar float constant at float32's lowest (``torch.finfo(float32).min``, transformers'
    attention-mask fill) set to ``MASK_FILL``; returns the graph to convert (``source`` itself when none) and how
    many were set. In fp16 that fill is -inf, and a fully masked row (a padded position) turns softmax into NaN that
    the next layer's zero attention weights multiply into real tokens (0 · NaN); guarded instead, the attention
    would stay fp32. ``MASK_FILL`` is -inf to softmax in both precisions for scores far below 10⁴."""
    from onnx import numpy_helper

    model = onnx.load(str(source))
    lowest = float(np.finfo(np.float32).min)

    def soften(tensor: onnx.TensorProto) -> bool:
        if tensor.data_type != onnx.TensorProto.FLOAT or int(np.prod(tensor.dims)) != 1:
            return False
        if float(numpy_helper.to_array(tensor).reshape(-1)[0]) > lowest / 2:
            return False
        tensor.CopyFrom(numpy_helper.from_array(np.full(tuple(tensor.dims), MASK_FILL, np.float32), tensor.name))
        return True

    count = sum(soften(init) for init in model.graph.initializer)
    count += sum(soften(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value")
    # The dynamo exporter also types its initializers in value_info; the converter retypes those entries to fp16
    # even where a guarded node keeps its weights fp32, leaving a graph whose declared types contradict it.
    weights = {init.name for init in model.graph.initializer}
    typed = [v for v in model.graph.value_info if v.name not in weights]
    if not count and len(typed) == len(model.graph.value_info):
        return source, 0
    del model.graph.value_info[:]
    model.graph.value_info.extend(typed)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(model, out), count


def _weight_ranges(model: onnx.ModelProto) -> dict[str, float]:
    """max |w| of every float32 initializer."""
    from onnx.numpy_helper import to_array

    return {init.name: float(np.abs(to_array(init)).max(initial=0.0)) for init in model.graph.initializer
            if init.data_type == onnx.TensorProto.FLOAT}


def convert(source: Path, feeds: list[Feeds], out_dir: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    """Guarded fp16 conversion of ``source``; returns the graph and how it was made."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    source, softened = soften_mask_fills(source, work / "softened" / MODEL_FILE)
    typed = annotate(source, work / "typed" / MODEL_FILE)  # the converter also needs types to place its Casts
    ranges = activation_ranges(typed, feeds, work)
    model = onnx.load(str(typed))
    blocked = guarded_nodes(model, ranges)
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FRAGILE_OPS))
    # OnnxModel's wrapper types contrib-op tensors and then removes the fp32→fp16→fp32 Cast pairs the raw
    # converter leaves between two fp32 nodes (such a pair would overflow exactly where the guard said not to).
    half = OnnxModel(onnx.load(str(source)))
    half.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True,
                                  node_block_list=sorted(blocked), op_block_list=ops)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_onnx(half.model, out_dir / MODEL_FILE)
    prove_finite(path, feeds)
    made_by = {"tool": "onnxruntime.transformers.float16", "keep_io_types": True, "mask_fills_softened": softened,
               "guard": {"inputs": len(feeds), "tensors_measured": len(ranges), "overflow_limit": FP16_MAX / HEADROOM,
                         "max_abs_activation": max(ranges.values(), default=0.0), "fp32_nodes": blocked,
                         "fp32_op_types": [op for op in FRAGILE_OPS if any(n.op_type == op for n in model.graph.node)],
                         "finite_on_guard_inputs": True}}
    return path, made_by


def prove_finite(model: Path, feeds: list[Feeds]) -> None:
    """Every output of ``model`` on the guard inputs must be finite."""
    for i, out in enumerate(run_model(model, feeds)):
        for name, value in out.items():
            if not np.isfinite(value).all():
                raise QuantizationError(
                    f"the fp16 graph still produces NaN/inf in {name!r} on guard input {i} despite the guard; "
                    "use the fp32-opt variant for this model"
                )
