"""Reading a source variant from an artifact and writing a new variant into it.

Every check happens before anything is written: a command that fails leaves ``manifest.json``
byte-identical. New graphs are built in a scratch directory inside the artifact (same filesystem)
and moved into place with ``os.replace`` only once they passed every check; the manifest is updated
last, through ``runtime.manifest.add_variant`` (atomic).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import onnx

from onnxformer.errors import QuantizationError
from onnxformer.quantize.fidelity import check_task
from onnxformer.runtime.manifest import add_variant, load_manifest, variant_record, verify_variant

MODEL_FILE = "model.onnx"
# Operators that only appear in graphs that were already quantized or converted.
_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearMatMul", "QLinearConv", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QEmbedLayerNormalization", "MatMulNBits", "QGemm",
})
_FLOAT_PRECISIONS = ("fp32",)


def load_source(directory: Path, variant: str) -> tuple[dict[str, Any], Path]:
    """Load the manifest and verify ``variant`` (sha256) and that it is an unquantized fp32 graph."""
    manifest = load_manifest(directory)
    check_task(manifest["task"])
    if variant not in manifest["variants"]:
        raise QuantizationError(
            f"variant {variant!r} is not in {directory}; available: {sorted(manifest['variants'])}"
        )
    precision = manifest["variants"][variant].get("precision")
    if precision not in _FLOAT_PRECISIONS:
        raise QuantizationError(
            f"variant {variant!r} is already quantized ({precision}); quantize from an fp32 variant "
            "(fp32 or fp32-opt) instead"
        )
    path = verify_variant(directory, manifest, variant)
    check_unquantized(path, variant)
    return manifest, path


def check_unquantized(path: Path, variant: str) -> None:
    """Refuse a graph that already holds quantization operators or fp16 weights, whatever the manifest says."""
    graph = onnx.load(str(path), load_external_data=False).graph
    found = sorted({n.op_type for n in graph.node if n.op_type in _QUANTIZED_OPS})
    if found:
        raise QuantizationError(
            f"variant {variant!r} ({path.name}) already contains quantized operators {found}; "
            "re-export the fp32 model and quantize that"
        )
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        raise QuantizationError(
            f"variant {variant!r} ({path.name}) already holds fp16 weights; re-export the fp32 model and quantize that"
        )


@contextlib.contextmanager
def scratch_dir(directory: Path) -> Iterator[Path]:
    """A temporary working directory inside the artifact, removed whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=".quantize-", dir=directory))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Save a graph as one file (external data only when protobuf's 2 GB limit demands it)."""
    large = model.ByteSize() > 1_800_000_000
    onnx.save_model(model, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)
    return path


def publish_variant(
    directory: Path, name: str, built: Path, *, precision: str, providers: list[str],
    made_by: dict[str, Any], fidelity: dict[str, Any], extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move a finished graph (and its external data) into ``<name>/`` and record it in the manifest."""
    target = directory / name
    target.mkdir(exist_ok=True)
    parts = {p: p.name.replace(built.name, MODEL_FILE, 1) for p in built.parent.glob(built.name + "*")}
    for stale in target.iterdir():  # files of an earlier variant of this name would be hashed with ours
        if stale.is_file() and stale.name not in parts.values():
            stale.unlink()
    for part in sorted(parts, key=lambda p: p == built):  # external data first, the graph that names it last
        os.replace(part, target / parts[part])
    record = variant_record(directory, f"{name}/{MODEL_FILE}", precision=precision, providers=providers,
                            made_by=made_by, fidelity=fidelity)
    return add_variant(directory, name, {**record, **(extra or {})})
