"""Hugging Face checkpoint → ONNX, through optimum's exporter (architecture coverage is its job)."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from onnxformer.errors import CheckpointError, ExportError
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.runtime.tasks import Task

log = logging.getLogger(__name__)


def load_reference(ckpt: Checkpoint, task: Task, trust_remote_code: bool = False) -> Any:
    """The PyTorch model the export is validated against, loaded safely (safetensors unless told otherwise)."""
    import transformers

    auto = getattr(transformers, task.auto_class)
    try:
        model = auto.from_pretrained(
            ckpt.path,
            use_safetensors=ckpt.weight_format == "safetensors",
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"transformers could not load {ckpt.path} for {task.name}: {_first_line(e)}") from None
    return model.eval()


def export_onnx(model: Any, task: Task, out_dir: Path, opset: int | None) -> list[Path]:
    """Export ``model`` into ``out_dir``; returns the files written (model.onnx plus any external data)."""
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".optimum-") as scratch:
        try:
            onnx_export_from_model(model, output=scratch, opset=opset, task=task.name, do_validation=False)
        except (ValueError, KeyError, NotImplementedError, RuntimeError) as e:
            raise ExportError(f"optimum could not export {task.name}: {_first_line(e)}") from e
        # optimum writes model.onnx (and model.onnx_data when the graph is over 2 GB) plus preprocessor
        # files; we keep the graph files only: tokenizer files are written by the artifact stage.
        produced = [p for p in Path(scratch).iterdir() if p.name.startswith("model.onnx")]
        if not any(p.name == "model.onnx" for p in produced):
            raise ExportError(f"optimum produced no model.onnx (got {sorted(p.name for p in Path(scratch).iterdir())})")
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.move(str(p), out_dir / p.name)) for p in produced]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
