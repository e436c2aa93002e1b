"""``torch.onnx.export(dynamo=True)``, once for every exporter: trace, check, save atomically.

Every Hugging Face export (encoders, decoders, seq2seq parts) goes through ``to_onnx``: it names the
inputs/outputs, declares the dynamic axes as ``torch.export.Dim``s, and writes the graph (and its
``<name>_data`` side file when large) in one rename, so a killed export leaves nothing that loads.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxformer.artifact.onnx_save import EXTERNAL_DATA_THRESHOLD, write_atomically
from onnxformer.errors import ExportError
from onnxformer.export.versions import library_versions

DEFAULT_OPSET = 18  # torch.onnx's own default; 14 is the floor (export/artifact.py MIN_OPSET)
Axes = Mapping[str, Mapping[int, str]]  # input name → {axis: dimension name}


def dynamic_shapes(example: Mapping[str, Any], axes: Axes) -> dict[str, dict[int, str] | None]:
    """Dynamic shapes for torch.onnx: dimension *names* (torch.onnx makes each a ``Dim.DYNAMIC`` and names the
    graph's axes after them, so inputs sharing "batch" share one symbol). Static inputs get ``None``."""
    return {name: dict(axes[name]) if axes.get(name) else None for name in example}


def export_program(module: Any, args: tuple[Any, ...] = (), *, kwargs: Mapping[str, Any] | None = None,
                   input_names: Sequence[str], output_names: Sequence[str], dynamic_shapes: Any,
                   opset: int | None, what: str, translations: Mapping[Any, Any] | None = None) -> Any:
    """``torch.onnx.export(dynamo=True)`` of ``module`` as every exporter here calls it; the ``ONNXProgram``.

    A failure is one ExportError line: "torch.onnx.export (dynamo=True) could not export ``what``: <the innermost
    cause>" (torch.onnx wraps torch.export's error in a page of advice). ``translations``: torch.onnx's
    ``custom_translation_table`` (our own custom ops → ONNX functions).
    """
    import torch

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "torchvision is not
    # installed": about torchvision's operators, which no transformer uses
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # transformers' and torch.export's notices are not actionable here
            return torch.onnx.export(module, tuple(args), kwargs=dict(kwargs or {}), dynamo=True,
                                     opset_version=opset or DEFAULT_OPSET, input_names=list(input_names),
                                     output_names=list(output_names), dynamic_shapes=dynamic_shapes, optimize=True,
                                     report=False, verbose=False,
                                     custom_translation_table=dict(translations) if translations else None)
    except Exception as e:  # torch.export raises many types; all mean "this model does not trace"
        raise ExportError(f"torch.onnx.export (dynamo=True) could not export {what}: {innermost(e)}") from e


def to_onnx(module: Any, example: Mapping[str, Any], path: Path, *, output_names: Sequence[str], axes: Axes,
            opset: int | None = None) -> dict[str, Any]:
    """Export ``module(**example)`` to ``path``; returns the ``made_by`` record of the graph.

    ``axes`` names the dynamic axes of every input; the outputs' dynamic axes follow from the trace.
    """
    program = export_program(module, kwargs=example, input_names=list(example), output_names=output_names,
                             dynamic_shapes=dynamic_shapes(example, axes), opset=opset,
                             what=_module_name(module))
    save_program(program, path)
    return made_by(opset)


def made_by(opset: int | None) -> dict[str, Any]:
    """How a graph was made: the dynamo exporter, on these versions."""
    versions = library_versions(("torch", "onnxscript", "transformers"))
    return {"tool": "torch.onnx.export", "dynamo": True, "opset": opset or DEFAULT_OPSET, "torch": versions.get("torch"),
            "onnxscript": versions.get("onnxscript"), "transformers": versions.get("transformers")}


def save_program(program: Any, path: Path) -> Path:
    """Write an ``ONNXProgram``'s model atomically (side file first, then the graph that names it)."""
    import onnx_ir as ir

    path.parent.mkdir(parents=True, exist_ok=True)
    model = program.model
    large = sum(v.const_value.nbytes for v in model.graph.initializers.values()
                if v.const_value is not None) > EXTERNAL_DATA_THRESHOLD
    return write_atomically(path, lambda target, data: ir.save(model, target, external_data=data), large)


def innermost(error: BaseException) -> str:
    """The first non-empty line of the innermost cause."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def _module_name(module: Any) -> str:
    inner = getattr(module, "model", module)  # our task wrappers hold the transformers model as .model
    return type(inner).__name__
