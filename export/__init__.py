"""Export stage: trained checkpoint → validated ONNX artifact directory."""
from __future__ import annotations

from onnxformer.artifact.families import ENCODER, names
from onnxformer.artifact.tasks import TASKS
from onnxformer.export.artifact import ExportResult, export_checkpoint
from onnxformer.export.pytorch import export_module

ENCODER_FAMILIES: tuple[str, ...] = names(ENCODER)  # exported and validated by tests/test_export_families.py

__all__ = ["ENCODER_FAMILIES", "TASKS", "ExportResult", "export_checkpoint", "export_module"]
