"""The export stage's entry point: inspect a checkpoint once, then hand it to the encoder or the generative
exporter. Both build the manifest with runtime.manifest.build_manifest and publish it in one rename."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.scratch import prepare_parent
from onnxformer.errors import ExportError
from onnxformer.export.checkpoint import inspect_checkpoint, resolve_model_path
from onnxformer.export.detect import check_architecture, generative_task, get_task, infer_task
from onnxformer.export.encoder import export_encoder
from onnxformer.export.generative import export_generative
from onnxformer.export.staging import check_destination

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    seconds: float
    task_inferred: bool


MIN_OPSET = 14  # scaled_dot_product_attention and friends need 14 at least


def check_opset(opset: int | None) -> None:
    """Refuse an opset torch.onnx cannot target before tracing (else: a page of graph dump, then the error)."""
    import onnx

    highest = onnx.defs.onnx_opset_version()
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= highest):
        raise ExportError(f"--opset {opset} is not supported; give {MIN_OPSET}..{highest} or leave it out (default)")


def export_checkpoint(
    model: str,
    out: str | Path,
    *,
    task: str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    progress: Progress = lambda _: None,
) -> ExportResult:
    """Export a Hugging Face checkpoint to ``out`` and validate it against PyTorch (decoders and seq2seq models
    with their KV cache, encoders as one graph)."""
    start = time.perf_counter()
    out = Path(out)
    check_opset(opset)
    prepare_parent(out)  # an unwritable --out (/proc/x, FILE/sub) is one line, before any model is loaded
    check_destination(out, overwrite)  # before any loading: a refused --out costs nothing
    if task is not None and generative_task("", task) is None:
        get_task(task)  # unknown task: fail before any loading
    ckpt = inspect_checkpoint(resolve_model_path(model), allow_pickle=allow_pickle)
    options: dict[str, Any] = dict(opset=opset, atol=atol, trust_remote_code=trust_remote_code, overwrite=overwrite, name=name,
                   progress=progress)
    is_st = ckpt.sentence_transformers is not None
    if generative_task(ckpt.model_type, task, is_st) is not None:  # decoders / seq2seq with a KV cache
        manifest = export_generative(ckpt, out, task=task, **options)
    else:
        spec = get_task(task or infer_task(ckpt.config, is_st))
        check_architecture(ckpt.model_type, spec.name)
        progress(f"task: {spec.name}" + (" (inferred from the checkpoint)" if task is None else ""))
        manifest = export_encoder(ckpt, spec, out, **options)
    return ExportResult(out, manifest, time.perf_counter() - start, task is None)
