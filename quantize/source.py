"""Reading a source variant from an artifact, and ``publish``: the one way a built variant enters it.

Every check happens before anything is written: a command that fails leaves ``manifest.json``
byte-identical. New graphs are built in a scratch directory inside the artifact (same filesystem)
and moved into place with ``os.replace`` only once they passed every check; the manifest is updated
last, in one atomic write (``Manifest.save``). Encoder and generative variants publish alike.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import onnx

from onnxformer.errors import QuantizationError
from onnxformer.quantize.fidelity import check_task
from onnxformer.runtime.manifest import Manifest, Variant, load_manifest, variant_record, verify_variant

if TYPE_CHECKING:
    from onnxformer.quantize.recipe import Built

MODEL_FILE = "model.onnx"
# Operators that only appear in graphs that were already quantized or converted.
_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearMatMul", "QLinearConv", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QEmbedLayerNormalization", "MatMulNBits", "QGemm",
})
_FLOAT_PRECISIONS = ("fp32",)


def load_source(directory: Path, variant: str) -> tuple[Manifest, Path]:
    """Load the manifest and verify ``variant`` (sha256) and that it is an unquantized fp32 graph."""
    manifest = load_manifest(directory)
    check_task(manifest.task)
    if variant not in manifest.variants:
        raise QuantizationError(
            f"variant {variant!r} is not in {directory}; available: {sorted(manifest.variants)}"
        )
    precision = manifest.variants[variant].precision
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


def publish(directory: Path, *built: Built) -> Manifest:
    """Move each built variant's graphs (and their external data) into ``<name>/``, hash them, and record
    every one in a single atomic manifest write. Returns the updated manifest."""
    records: dict[str, Variant] = {}
    with scratch_dir(directory) as work:
        for b in built:
            _replace_dir(_gather(b, work / b.name), directory / b.name, work / f"{b.name}.old")
            records[b.name] = _record(directory, b)
    manifest = load_manifest(directory)  # as it is now, not as it was when the build started
    manifest.variants.update(records)
    manifest.save(directory)
    return manifest


def _gather(built: Built, staging: Path) -> Path:
    """Move every graph of ``built`` and the files named after it (``model.onnx_data``) into ``staging``."""
    staging.mkdir()
    for graph in built.graphs.values():
        for part in sorted(graph.parent.glob(graph.name + "*"), key=lambda p: p == graph):  # the graph last
            os.replace(part, staging / part.name)
    return staging


def _replace_dir(staging: Path, target: Path, old: Path) -> None:
    """Swap ``staging`` in as ``target``: files of an earlier variant of this name would be hashed with ours."""
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)


def _record(directory: Path, built: Built) -> Variant:
    files = {role: f"{built.name}/{path.name}" for role, path in built.graphs.items()}
    return variant_record(directory, files[built.main], precision=built.precision, providers=built.providers,
                          made_by=built.made_by, fidelity=built.fidelity, graph=built.graph,
                          components=files if built.generative else None, cache_dtype=built.cache_dtype,
                          speed_cpu=built.speed_cpu, activation_scales=built.activation_scales)
