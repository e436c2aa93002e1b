"""Saving an ONNX graph, once for every stage: one file, or graph + ``<name>_data`` when it is large.

``onnx`` is imported inside ``save_onnx``: importing the runtime never imports it (the runtime
itself only reads graphs through ONNX Runtime).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

# Protobuf refuses messages over 2 GiB; past this size the weights go to a side file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def external_data_name(path: str | os.PathLike) -> str:
    """The side file of a large graph (optimum's convention: ``model.onnx`` → ``model.onnx_data``)."""
    return f"{Path(path).name}_data"


def save_onnx(model: Any, path: str | os.PathLike, *,
              external_threshold_bytes: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    """Write ``model`` (an ``onnx.ModelProto`` holding its weights) to ``path`` and return ``path``.

    Atomic: written in a temporary directory beside ``path``, then moved into place, the side file first
    and the graph that names it last, so ``path`` is the old graph or the new one, never half of one.
    A graph over ``external_threshold_bytes`` keeps its weights in ``<name>_data``; a small one is one
    file, and a ``<name>_data`` left by an earlier large graph of that name is removed.
    """
    import onnx

    large = approximate_size(model) > external_threshold_bytes

    def write(target: Path, data: str | None) -> None:
        if data is None:  # one file: the bytes as protobuf makes them (onnx.save_model took 2.5× as long on BERT-base)
            target.write_bytes(model.SerializeToString())
            return
        onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True, location=data)

    return write_atomically(Path(path), write, large)


def approximate_size(model: Any) -> int:
    """``model``'s serialized size to within the small fields: its initializers' bytes plus every node's size.
    ``ModelProto.ByteSize()`` took 2.5 s on BERT-base (longer than serializing it)."""
    graph = model.graph
    weights = sum(len(t.raw_data) if t.HasField("raw_data") else t.ByteSize() for t in graph.initializer)
    return weights + sum(n.ByteSize() for n in graph.node)


def write_atomically(path: Path, write: Callable[[Path, str | None], None], large: bool) -> Path:
    """``write(target, data)`` a graph into a temporary directory beside ``path`` (``data``: the side file's name when
    ``large``, else None), then move it into place, the side file first and the graph that names it last; a small
    graph removes a ``<name>_data`` left by an earlier large graph of that name. Every graph writer shares this."""
    data = external_data_name(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(staging / path.name, data if large else None)
        if large:
            os.replace(staging / data, path.parent / data)
        os.replace(staging / path.name, path)
        if not large:
            (path.parent / data).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
