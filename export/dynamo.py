"""``torch.onnx.export(dynamo=True)``, once for every exporter: trace, check, save atomically.

Every Hugging Face export (encoders, decoders, seq2seq parts) goes through ``to_onnx``: it names the
inputs/outputs, declares the dynamic axes as ``torch.export.Dim``s, and writes the graph (and its
``<name>_data`` side file when large) in one rename, so a killed export leaves nothing that loads.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxformer.errors import ExportError
from onnxformer.runtime.onnx_save import EXTERNAL_DATA_THRESHOLD, external_data_name

DEFAULT_OPSET = 18  # torch.onnx's own default; 14 is the floor (export/artifact.py MIN_OPSET)
Axes = Mapping[str, Mapping[int, str]]  # input name → {axis: dimension name}


def dynamic_shapes(example: Mapping[str, Any], axes: Axes) -> dict[str, dict[int, str] | None]:
    """Dynamic shapes for torch.onnx: dimension *names* (torch.onnx makes each a ``Dim.DYNAMIC`` and names the
    graph's axes after them, so inputs sharing "batch" share one symbol). Static inputs get ``None``."""
    return {name: dict(axes[name]) if axes.get(name) else None for name in example}


def to_onnx(module: Any, example: Mapping[str, Any], path: Path, *, output_names: Sequence[str], axes: Axes,
            opset: int | None = None) -> dict[str, Any]:
    """Export ``module(**example)`` to ``path``; returns the ``made_by`` record of the graph.

    ``axes`` names the dynamic axes of every input; the outputs' dynamic axes follow from the trace.
    """
    import torch

    opset = opset or DEFAULT_OPSET
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "torchvision is not
    # installed": about torchvision's operators, which no transformer uses
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # transformers' and torch.export's notices are not actionable here
            program = torch.onnx.export(module, (), kwargs=dict(example), dynamo=True, opset_version=opset,
                                        input_names=list(example), output_names=list(output_names),
                                        dynamic_shapes=dynamic_shapes(example, axes), optimize=True,
                                        report=False, verbose=False)
    except Exception as e:  # torch.export raises many types; all mean "this model does not trace"
        raise ExportError(f"torch.onnx.export (dynamo) failed for {type(module).__name__}: {_first_line(e)}") from e
    save_program(program, path)
    return {"tool": "torch.onnx.export", "dynamo": True, "opset": opset,
            "torch": torch.__version__, "onnxscript": _version("onnxscript")}


def save_program(program: Any, path: Path) -> Path:
    """Write an ``ONNXProgram``'s model atomically (side file first, then the graph that names it)."""
    import onnx_ir as ir

    path.parent.mkdir(parents=True, exist_ok=True)
    model = program.model
    large = sum(v.const_value.nbytes for v in model.graph.initializers.values()
                if v.const_value is not None) > EXTERNAL_DATA_THRESHOLD
    data = external_data_name(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        ir.save(model, staging / path.name, external_data=data if large else None)
        if large:
            os.replace(staging / data, path.parent / data)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(e: BaseException) -> str:
    text = [line for line in str(e).strip().splitlines() if line.strip()]
    return text[0][:300] if text else type(e).__name__
