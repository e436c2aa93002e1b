"""Plain PyTorch modules → validated ONNX artifact, through torch.onnx.export (dynamo, export/dynamo.py).

For models that are not Hugging Face checkpoints: the caller supplies example inputs (traced) and
validation inputs of *other* shapes; the artifact has task "raw" and no tokenizer, and the runtime
serves it through ``Model.run(feeds)``.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from onnxformer.artifact.manifest import Architecture, build_manifest
from onnxformer.errors import ValidationError
from onnxformer.export.artifact import ExportResult
from onnxformer.export.describe import fp32_variant, io_specs
from onnxformer.export.dynamo import to_onnx
from onnxformer.export.staging import staging_dir
from onnxformer.export.validate import Case, validate
from onnxformer.export.versions import library_versions

Feeds = Mapping[str, np.ndarray]


def export_module(
    module: Any,
    example_inputs: Feeds,
    out: str | Path,
    *,
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    validation_inputs: Sequence[Feeds],
    opset: int = 18,
    atol: float = 1e-4,
    name: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``module`` (called as ``module(**inputs)``) and validate it on ``validation_inputs``."""
    import torch

    start = time.perf_counter()
    out = Path(out)
    _check_validation_shapes(example_inputs, validation_inputs)
    module = module.eval()
    input_names = list(example_inputs)
    with staging_dir(out, overwrite) as stage:
        (stage / "fp32").mkdir()
        onnx_path = stage / "fp32" / "model.onnx"
        example = {k: torch.from_numpy(np.asarray(example_inputs[k])) for k in input_names}
        made_by = to_onnx(module, example, onnx_path, output_names=output_names, axes=dynamic_axes, opset=opset)
        cases = [Case(f"validation-{i}", {k: np.asarray(v) for k, v in feeds.items()})
                 for i, feeds in enumerate(validation_inputs)]
        validation = validate(_module_reference(module, input_names, output_names), onnx_path, cases, atol)
        inputs, outputs = io_specs(onnx_path)
        cls = f"{type(module).__module__}.{type(module).__qualname__}"
        manifest = build_manifest(
            name=name or type(module).__name__, task="raw",
            architecture=Architecture("pytorch-module", extra={"class": cls}),
            source={"path": None, "weight_format": "state_dict", "sha256": {"state_dict": _state_dict_sha256(module)}},
            opset=opset, inputs=inputs, outputs=outputs, versions=library_versions(), validation=validation,
            fp32=fp32_variant(stage, "fp32/model.onnx", validation, made_by),
        )
        manifest.save(stage)
    return ExportResult(out, manifest, time.perf_counter() - start, task_inferred=False)


def _check_validation_shapes(example: Feeds, validation: Sequence[Feeds]) -> None:
    traced = {k: np.shape(v) for k, v in example.items()}
    if not validation:
        raise ValidationError("pass validation_inputs: at least one input set with shapes other than the example's")
    if all({k: np.shape(v) for k, v in feeds.items()} == traced for feeds in validation):
        raise ValidationError("validation_inputs all have the traced shapes; add one with another batch or length "
                              "so dynamic axes are actually checked")


def _module_reference(module: Any, input_names: list[str], output_names: Sequence[str]):
    import torch

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = module(**{k: torch.from_numpy(feeds[k]) for k in input_names})
        if isinstance(out, torch.Tensor):
            out = (out,)
        if isinstance(out, Mapping):
            out = [out[k] for k in output_names] if all(k in out for k in output_names) else list(out.values())
        return {n: t.detach().numpy() for n, t in zip(output_names, out)}

    return run


def _state_dict_sha256(module: Any) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
