"""An optional ``logits_to_keep`` input for exported decoders: logits for the last k positions only.

optimum's decoder computes logits for every prompt position, but generation needs the last one:
for a GPT-2-sized model a 128-token prompt spends about half its time to first token in that vocab
projection (transformers' ``generate`` keeps only the last position too). The edit slices the
hidden states just before the final MatMul. Feeding 0 keeps every position (validation and
fidelity measurement do that); the runtime feeds 1 for the prompt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxformer.errors import ExportError
from onnxformer.runtime.onnx_save import save_onnx

INPUT = "logits_to_keep"
_INT64_MAX = np.iinfo(np.int64).max


def add_logits_to_keep(path: Path) -> None:
    """Rewrite the decoder graph at ``path`` in place (temp file + rename; external data kept)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    producers = [n for n in model.graph.node if "logits" in n.output]
    if len(producers) != 1 or producers[0].op_type != "MatMul":
        raise ExportError(f"{path.name}: expected one MatMul producing logits, found "
                          f"{[n.op_type for n in producers]}; cannot add {INPUT}")
    head = producers[0]
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([_INT64_MAX], dtype=np.int64), f"{INPUT}/ends"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), f"{INPUT}/axes"),
    ])
    model.graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.INT64, [1]))
    sliced = f"{INPUT}/hidden"
    index = list(model.graph.node).index(head)
    model.graph.node.insert(index, helper.make_node("Neg", [INPUT], [f"{INPUT}/starts"], name=f"{INPUT}/Neg"))
    model.graph.node.insert(index + 1, helper.make_node(
        "Slice", [head.input[0], f"{INPUT}/starts", f"{INPUT}/ends", f"{INPUT}/axes"], [sliced], name=f"{INPUT}/Slice"))
    head.input[0] = sliced
    save_onnx(model, path)
