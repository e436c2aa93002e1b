"""Type and shape annotation of graphs that hold ONNX Runtime contrib operators.

ONNX's own shape inference does not know Attention, SkipLayerNormalization & co., so their outputs
carry no type; ORT's calibrators then silently skip them (and the quantizer cannot type them).
ORT's symbolic shape inference knows the contrib operators: run it first.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from onnxformer.artifact.onnx_save import save_onnx
from onnxformer.errors import QuantizationError


def annotate(source: Path, out: Path) -> Path:
    """Write ``source`` with every intermediate tensor typed (value_info) to ``out``."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(source)), auto_merge=True)
    except Exception as e:  # the tool raises bare Exceptions; name the step and the cause
        raise QuantizationError(f"ONNX Runtime's symbolic shape inference failed on {source.name}: {e}") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(inferred, out)
