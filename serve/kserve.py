"""KServe v2 / Open Inference Protocol: request parsing and response encoding, JSON and binary tensors.

Binary tensors follow Triton's binary-data extension (what ``tritonclient.http`` sends by default): the
JSON header's length is in ``Inference-Header-Content-Length`` and each tensor's bytes follow it, sized by
its ``binary_data_size`` parameter. BYTES elements are 4-byte little-endian length + bytes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from onnxformer.artifact.dtypes import DTYPES, from_v2
from onnxformer.artifact.manifest import TensorSpec
from onnxformer.serve.schemas import InferBody, TensorInput, parse_body
from onnxformer.serve.statuses import ErrorKind, ServingError

HEADER_LENGTH = "Inference-Header-Content-Length"
BYTES = "BYTES"  # v2's string tensor (UTF-8 text): the one datatype that is not a graph dtype (runtime/dtypes)
MAX_ELEMENTS = 1 << 26  # elements per tensor (a 4 MiB body holds at most ~1M numbers anyway)
DATATYPES = sorted([d.v2 for d in DTYPES.values()] + [BYTES])


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[str] | None  # None: every output
    binary_outputs: set[str] = field(default_factory=set)


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    header, blob = _split(body, header_length)
    doc = parse_body(header, InferBody)  # types, shapes, parameters and depth checked: a 400 naming the field
    if not doc.inputs:
        raise ServingError('request must be a JSON object with a non-empty "inputs" list', ErrorKind.BAD_REQUEST)
    offset, inputs = 0, {}
    for spec in doc.inputs:
        tensor, offset = _parse_tensor(spec, blob, offset)
        if tensor.name in inputs:
            raise ServingError(f"input {tensor.name!r} appears twice", ErrorKind.BAD_REQUEST)
        inputs[tensor.name] = tensor
    if offset != len(blob):
        raise ServingError(f"{len(blob) - offset} bytes of binary data are not claimed by any input",
                           ErrorKind.BAD_REQUEST)
    outputs, binary = _requested_outputs(doc)
    return InferRequest(doc.id, inputs, outputs, binary)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit():
        raise ServingError(f"{HEADER_LENGTH} must be a non-negative integer (got {header_length[:32]!r})",
                           ErrorKind.BAD_REQUEST)
    n = int(header_length)
    if not 0 < n <= len(body):
        raise ServingError(f"{HEADER_LENGTH} {n} does not fit the {len(body)}-byte body", ErrorKind.BAD_REQUEST)
    return body[:n], body[n:]


def _parse_tensor(spec: TensorInput, blob: bytes, offset: int) -> tuple[Tensor, int]:
    name, datatype, shape = spec.name, spec.datatype, spec.shape
    count = check_header(name, datatype, shape)
    size = (spec.parameters or {}).get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(blob):
            raise ServingError(f"input {name!r}: binary_data_size {size!r} runs past the request body",
                               ErrorKind.BAD_REQUEST)
        flat = _from_binary(name, datatype, blob[offset:offset + size])
        offset += size
    elif spec.data is not None:
        flat = _from_json(name, datatype, spec.data)
    else:
        raise ServingError(f"input {name!r} has neither \"data\" nor binary data", ErrorKind.BAD_REQUEST)
    if flat.size != count:
        raise ServingError(f"input {name!r}: shape {shape} needs {count} elements, got {flat.size}",
                           ErrorKind.BAD_REQUEST)
    return Tensor(name, datatype, shape, flat.reshape(shape)), offset


def check_header(name: str, datatype: str, shape: list[int]) -> int:
    """A tensor's datatype and shape, checked before any of its data is read (HTTP and gRPC alike); returns
    its element count."""
    if datatype != BYTES and from_v2(datatype) is None:
        raise ServingError(f"input {name!r}: unknown datatype {datatype!r}; use one of {DATATYPES}",
                           ErrorKind.BAD_REQUEST)
    if any(d < 0 for d in shape):
        raise ServingError(f"input {name!r}: shape must be a list of non-negative integers (got {shape!r})",
                           ErrorKind.BAD_REQUEST)
    count = math.prod(shape)  # Python ints: [2**32, 2**32] is 2**64 elements, not an overflow to 0
    if count > MAX_ELEMENTS:
        raise ServingError(f"input {name!r}: shape {shape} is {count} elements; the limit is {MAX_ELEMENTS}",
                           ErrorKind.PAYLOAD_TOO_LARGE)
    return count


def _numpy(datatype: str) -> Any:
    """The numpy dtype of a KServe v2 datatype (the caller has checked the name is one of ours)."""
    dtype = from_v2(datatype)
    if dtype is None:
        raise ServingError(f"unknown datatype {datatype!r}", ErrorKind.BAD_REQUEST)
    return dtype.numpy


def _from_binary(name: str, datatype: str, raw: bytes) -> np.ndarray:
    try:
        if datatype == BYTES:
            return deserialize_bytes_tensor(raw) if raw else np.empty(0, dtype=np.object_)
        return np.frombuffer(raw, dtype=_numpy(datatype))
    except Exception as e:  # any decoding failure is the client's malformed payload
        raise ServingError(f"input {name!r}: binary data is not valid {datatype} ({e})",
                           ErrorKind.BAD_REQUEST) from None


def _from_json(name: str, datatype: str, data: Any) -> np.ndarray:
    flat = np.array(_flatten(data), dtype=object)  # nested lists (ragged ones too) in row-major order
    if datatype == BYTES:
        if not all(isinstance(v, str) for v in flat):
            raise ServingError(f"input {name!r}: BYTES data must be strings", ErrorKind.BAD_REQUEST)
        for i, v in enumerate(flat):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\\ud800") is valid JSON but not text
                raise ServingError(f"input {name!r}: element {i} is not valid Unicode (a lone surrogate?)",
                                   ErrorKind.BAD_REQUEST) from None
        return flat
    target = _numpy(datatype)
    kind = np.dtype(target).kind
    ok = (lambda v: isinstance(v, bool)) if kind == "b" else (
        (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind in "iu" else
        (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)))
    if not all(ok(v) for v in flat):
        raise ServingError(f"input {name!r}: data does not match datatype {datatype}", ErrorKind.BAD_REQUEST)
    try:
        return flat.astype(target)
    except (OverflowError, ValueError) as e:
        raise ServingError(f"input {name!r}: data does not fit {datatype} ({e})", ErrorKind.BAD_REQUEST) from None


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for v in data:  # depth is bounded by schemas.check_depth before this is reached
        out.extend(_flatten(v)) if isinstance(v, list) else out.append(v)
    return out


def _requested_outputs(doc: InferBody) -> tuple[list[str] | None, set[str]]:
    all_binary = bool((doc.parameters or {}).get("binary_data_output", False))
    if doc.outputs is None:
        return None, {"*"} if all_binary else set()
    binary = {s.name for s in doc.outputs if (s.parameters or {}).get("binary_data", all_binary)}
    return [s.name for s in doc.outputs], binary


def text_input(req: InferRequest, name: str) -> list[str]:
    """The BYTES text input as a list of str: shape [N] or [N, 1]."""
    t = req.inputs[name]
    if t.datatype != BYTES:
        raise ServingError(f"input {name!r} must be BYTES (UTF-8 text), got {t.datatype}", ErrorKind.BAD_REQUEST)
    if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)) or t.shape[0] == 0:
        raise ServingError(f"input {name!r} must have shape [N] or [N, 1] with N >= 1, got {t.shape}",
                           ErrorKind.BAD_REQUEST)
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in t.array.ravel()]
    except UnicodeDecodeError:
        raise ServingError(f"input {name!r} is not valid UTF-8", ErrorKind.BAD_REQUEST) from None


def encode_response(model: str, req: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """Body and headers: JSON tensors, or a JSON header followed by binary tensors where asked."""
    names = req.outputs if req.outputs is not None else list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise ServingError(f"unknown output(s) {unknown}; this request yields {sorted(outputs)}", ErrorKind.BAD_REQUEST)
    specs, blobs = [], []
    for name in names:
        arr = np.ascontiguousarray(outputs[name])
        spec: dict[str, Any] = {"name": name, "datatype": _v2_dtype(name, arr), "shape": list(arr.shape)}
        if name in req.binary_outputs or "*" in req.binary_outputs:
            raw = _to_binary(arr)
            spec["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            spec["data"] = [v.decode() if isinstance(v, bytes) else v for v in arr.ravel().tolist()]
        specs.append(spec)
    doc: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": specs}
    if req.id is not None:
        doc["id"] = req.id
    header = json.dumps(doc).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _v2_dtype(name: str, arr: np.ndarray) -> str:
    if arr.dtype == np.object_:
        return BYTES
    if arr.dtype.name not in DTYPES:
        raise ServingError(f"output {name!r} has dtype {arr.dtype.name}, which KServe v2 cannot name",
                           ErrorKind.INTERNAL)
    return DTYPES[arr.dtype.name].v2


def _to_binary(arr: np.ndarray) -> bytes:
    if arr.dtype == np.object_:
        packed = serialize_byte_tensor(arr)
        return packed.item() if packed.size else b""
    return arr.tobytes()


def tensor_metadata(specs: list[TensorSpec]) -> list[dict[str, Any]]:
    """Manifest inputs/outputs → v2 metadata (dynamic dims as -1)."""
    return [{"name": s.name, "datatype": v2_datatype(s.dtype),
             "shape": [d if isinstance(d, int) else -1 for d in s.shape]} for s in specs]


def v2_datatype(dtype: str) -> str:
    """The v2 datatype of a manifest dtype (a dtype we do not know keeps its own name, upper-cased)."""
    return DTYPES[dtype].v2 if dtype in DTYPES else dtype.upper()
