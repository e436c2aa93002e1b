"""Where an ONNX file keeps its external data — read from the protobuf wire format, without the onnx package.

The runtime may not import ``onnx`` (nor protobuf-generated classes), yet it must refuse a graph whose
initializers point outside the artifact directory *before* ONNX Runtime opens them. A ModelProto is plain
protobuf, so a small reader walks only the messages that can hold tensors and skips everything else by
length (raw weights are skipped, never copied):

    ModelProto.graph(7) / .functions(25).node(7) / .training_info(20).{initialization(1), algorithm(2)}
    GraphProto.initializer(5) / .sparse_initializer(15) / .node(1)
    NodeProto.attribute(5) → AttributeProto.t(5) / g(6) / tensors(10) / graphs(11) / sparse_tensor(22) / sparse_tensors(23)
    SparseTensorProto.values(1) / .indices(2)
    TensorProto.external_data(13): StringStringEntryProto{key(1), value(2)}; data_location(14)
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Iterator

from onnxformer.errors import IntegrityError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies); deeper than this is not a model anyone exported

# message kind → {field number: child message kind}; fields not listed are skipped.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def external_locations(path: str | Path) -> list[str]:
    """Every external-data ``location`` the ONNX file at ``path`` refers to, in file order, deduplicated."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise IntegrityError(f"{path} is empty, not an ONNX model; re-export the model")
        # mmap: a 2 GB graph is paged in as it is walked, never copied whole into memory
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = memoryview(mapped)
            locations, problem = _scan(data)
            data.release()  # every slice is gone once _scan returned, so the map can close
    if problem:
        raise IntegrityError(f"{path} is not a readable ONNX protobuf ({problem}); re-export the model")
    return locations


def _scan(data: memoryview) -> tuple[list[str], str]:
    """(locations, "") or ([], what is wrong); the walk's frames (and their views) end before returning."""
    seen: dict[str, None] = {}
    try:
        for location in _walk(data, "model", 0):
            seen.setdefault(location, None)
    except (IndexError, ValueError) as e:
        return [], str(e) or type(e).__name__
    return list(seen), ""


def _walk(buf: memoryview, kind: str, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deeply")
    if kind == "tensor":
        yield from _tensor_locations(buf)
        return
    children = _CHILDREN[kind]
    for field, wire, value in _fields(buf):
        if wire == _LEN and field in children:
            yield from _walk(value, children[field], depth + 1)


def _tensor_locations(buf: memoryview) -> Iterator[str]:
    for field, wire, value in _fields(buf):
        if field == 13 and wire == _LEN:  # external_data entry
            entry = {f: bytes(v).decode("utf-8", "replace") for f, w, v in _fields(value) if w == _LEN}
            if entry.get(1) == "location":
                yield entry.get(2, "")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(field number, wire type, payload) for each field of one message; varints come back as empty views."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(buf, pos)
            yield field, wire, buf[pos:pos]
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated length-delimited field")
            yield field, wire, buf[pos:pos + size]
            pos += size
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
