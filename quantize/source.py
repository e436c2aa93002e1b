"""Reading a source variant from an artifact, and ``publish``: the one way a built variant enters it.

Every check happens before anything is written: a command that fails leaves ``manifest.json``
byte-identical. New graphs are built in a locked scratch directory inside the artifact (same filesystem)
and moved, under a folder name no variant uses, into place only once they passed every check; the manifest
is swapped last, in one atomic write (``Manifest.save``), and only then are replaced folders removed.
Encoder and generative variants publish alike.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import onnx

from onnxformer.artifact import scratch
from onnxformer.artifact.files import atomic_write_json
from onnxformer.artifact.manifest import MANIFEST_NAME, Manifest, Variant, load_manifest, variant_record, verify_variant
from onnxformer.errors import QuantizationError
from onnxformer.quantize.fidelity import check_task

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


SCRATCH = ".quantize-"
JOURNAL = ".publish-pending.json"  # variant folders a publish was switching between (see ``publish``)


@contextlib.contextmanager
def scratch_dir(directory: Path) -> Iterator[Path]:
    """A locked working directory inside the artifact (same filesystem: publishing is a rename), removed
    whatever happens. Stale ones of killed runs, and a killed publish's folders, are removed first."""
    sweep_artifact(directory)
    with scratch.scratch_dir(directory, SCRATCH) as path:
        yield path


def sweep_artifact(directory: Path) -> None:
    """Finish what a killed command left: scratch directories nobody holds, and the folders of an
    interrupted publish that the manifest does not reference (new ones never swapped in, old ones swapped out)."""
    scratch.sweep(directory, SCRATCH)
    for written in (MANIFEST_NAME, JOURNAL):  # a killed atomic write's temp file (artifact/files.py names them)
        scratch.sweep(directory, f".{written}.")
    journal = directory / JOURNAL
    if not journal.is_file():
        return
    try:
        listed = [d for d in json.loads(journal.read_text()).get("dirs", []) if isinstance(d, str)]
    except (ValueError, AttributeError):
        listed = []
    used = _referenced(load_manifest(directory))
    freed = 0
    for name in listed:
        path = directory / name
        if name not in used and "/" not in name and not name.startswith(".") and path.is_dir():
            freed += scratch.tree_size(path)
            shutil.rmtree(path, ignore_errors=True)
    journal.unlink(missing_ok=True)
    if freed:
        scratch.log.warning("removed the folders of an interrupted publish in %s: %s freed", directory,
                            scratch.human_bytes(freed))


def publish(directory: Path, *built: Built) -> Manifest:
    """All or nothing: each built variant's files go into a folder of a new name (``int8/``, or ``int8.1/``
    while an older ``int8/`` is in use), the manifest is swapped in one atomic rename, and only then are the
    folders of the variants it replaced removed; a variant published under a temporary name then gets its
    usual folder back through hard links and a second swap. A kill at any moment leaves a manifest whose every
    file is intact (old or new); the next command removes the orphans (``sweep_artifact``). Returns the
    updated manifest."""
    with scratch_dir(directory) as work:
        current = load_manifest(directory)  # as it is now, not as it was when the build started
        taken = _referenced(current) | {p.name for p in directory.iterdir()}
        folders = {b.name: _new_folder(b.name, taken) for b in built}
        old = {_folder(current.variants[b.name]) for b in built if b.name in current.variants}
        atomic_write_json(directory / JOURNAL, {"dirs": sorted(set(folders.values()) | old | set(folders))})
        for b in built:
            os.replace(_gather(b, work / b.name), directory / folders[b.name])  # a new name: nothing overwritten
            current.variants[b.name] = _record(directory, b, folders[b.name])
        current.save(directory)  # the swap
        _remove(directory, old - _referenced(current), work)
        for name, folder in folders.items():  # back to the usual folder name, by hard links and a second swap
            if folder != name and not (directory / name).exists():
                _link_tree(directory / folder, work / f"relink-{name}")
                os.replace(work / f"relink-{name}", directory / name)
                current.variants[name] = _moved(current.variants[name], folder, name)
                current.save(directory)
                _remove(directory, {folder} - _referenced(current), work)
        (directory / JOURNAL).unlink(missing_ok=True)
    return current


def _remove(directory: Path, folders: set[str], work: Path) -> None:
    for name in folders:  # out of the artifact in one rename; deleted with ``work`` (or by the next sweep)
        os.replace(directory / name, work / f"old-{name}")


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.iterdir():
        os.link(path, target / path.name)


def _moved(record: Variant, old: str, new: str) -> Variant:
    move = lambda rel: f"{new}/{rel.split('/', 1)[1]}" if rel.split("/", 1)[0] == old else rel
    return dataclasses.replace(record, file=move(record.file), files={move(k): v for k, v in record.files.items()},
                               components={k: move(v) for k, v in record.components.items()})


def _referenced(manifest: Manifest) -> set[str]:
    """Top-level folders that hold a file of some variant."""
    return {rel.split("/", 1)[0] for v in manifest.variants.values() for rel in [v.file, *v.files, *v.components.values()]
            if "/" in rel}


def _folder(record: Variant) -> str:
    return record.file.split("/", 1)[0]


def _new_folder(name: str, taken: set[str]) -> str:
    candidates = [name] + [f"{name}.{i}" for i in range(1, 1000)]
    folder = next(c for c in candidates if c not in taken)
    taken.add(folder)
    return folder


def _gather(built: Built, staging: Path) -> Path:
    """Move every graph of ``built`` and the files named after it (``model.onnx_data``) into ``staging``."""
    staging.mkdir()
    for graph in built.graphs.values():
        for part in sorted(graph.parent.glob(graph.name + "*"), key=lambda p: p == graph):  # the graph last
            os.replace(part, staging / part.name)
    return staging


def _record(directory: Path, built: Built, folder: str) -> Variant:
    files = {role: f"{folder}/{path.name}" for role, path in built.graphs.items()}
    return variant_record(directory, files[built.main], precision=built.precision, providers=built.providers,
                          made_by=built.made_by, fidelity=built.fidelity, graph=built.graph,
                          components=files if built.generative else None, cache_dtype=built.cache_dtype,
                          speed_cpu=built.speed_cpu, activation_scales=built.activation_scales)
