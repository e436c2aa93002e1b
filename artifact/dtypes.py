"""Element types, once: ONNX Runtime's type strings ↔ numpy ↔ KServe v2 / Triton datatype names.

Every stage that names a dtype (the manifest's TensorSpec, I/O binding, the KV cache, the server's
tensors, Triton configs) looks it up here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxformer.errors import ArtifactError


@dataclass(frozen=True)
class DType:
    name: str  # numpy name, as the manifest records it
    numpy: type
    ort: str  # ONNX Runtime NodeArg.type
    v2: str  # KServe v2 / Triton datatype (Triton's config enum is "TYPE_" + this)


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("float32", np.float32, "tensor(float)", "FP32"),
    DType("float16", np.float16, "tensor(float16)", "FP16"),
    DType("float64", np.float64, "tensor(double)", "FP64"),
    DType("bfloat16", np.uint16, "tensor(bfloat16)", "BF16"),  # numpy has no bfloat16: raw bits
    DType("int64", np.int64, "tensor(int64)", "INT64"),
    DType("int32", np.int32, "tensor(int32)", "INT32"),
    DType("int16", np.int16, "tensor(int16)", "INT16"),
    DType("int8", np.int8, "tensor(int8)", "INT8"),
    DType("uint8", np.uint8, "tensor(uint8)", "UINT8"),
    DType("bool", np.bool_, "tensor(bool)", "BOOL"),
)}
_BY_ORT = {d.ort: d for d in DTYPES.values()}
_BY_V2 = {d.v2: d for d in DTYPES.values()}


def numpy_name(ort_type: str) -> str:
    """``tensor(float)`` → ``float32`` (unknown element types keep ONNX Runtime's own name)."""
    found = _BY_ORT.get(ort_type)
    return found.name if found else ort_type.removeprefix("tensor(").removesuffix(")")


def from_ort(ort_type: str) -> DType:
    if ort_type not in _BY_ORT:
        raise ArtifactError(f"element type {ort_type} is not supported; supported: {', '.join(_BY_ORT)}")
    return _BY_ORT[ort_type]


def from_name(name: str) -> DType:
    if name not in DTYPES:
        raise ArtifactError(f"dtype {name!r} in the manifest is not supported; supported: {', '.join(DTYPES)}")
    return DTYPES[name]


def from_v2(datatype: str) -> DType | None:
    """The dtype of a KServe v2 datatype name, or None (BYTES and unknown names are not tensors of ours)."""
    return _BY_V2.get(datatype)
