"""Export stage: trained checkpoint → validated ONNX artifact directory."""
from __future__ import annotations

from onnxformer.export.artifact import ExportResult, export_checkpoint
from onnxformer.export.pytorch import export_module
from onnxformer.export.tasks import ENCODER_FAMILIES, TASKS

__all__ = ["ENCODER_FAMILIES", "TASKS", "ExportResult", "export_checkpoint", "export_module"]
