"""Hugging Face encoder checkpoint → ONNX, through torch.onnx's dynamo exporter (export/dynamo.py)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from onnxformer.artifact.tasks import Task
from onnxformer.errors import CheckpointError
from onnxformer.export.checkpoint import Checkpoint
from onnxformer.export.dynamo import to_onnx

# Trace shapes; validation then runs others (export/validate.py).
TRACE_BATCH, TRACE_LENGTH = 2, 16


def load_reference(ckpt: Checkpoint, task: Task, trust_remote_code: bool = False) -> Any:
    """The PyTorch model the export is validated against, loaded safely (safetensors unless told otherwise) and in
    float32: transformers 5 loads a checkpoint in its own dtype by default, and fp32 is the reference."""
    import torch
    import transformers

    assert task.auto_class is not None, task.name  # export takes only tasks with a transformers class
    auto = getattr(transformers, task.auto_class)
    try:
        model = auto.from_pretrained(
            ckpt.path,
            use_safetensors=ckpt.weight_format == "safetensors",
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"transformers could not load {ckpt.path} for {task.name}: {_first_line(e)}") from None
    return model.eval()


def input_names(model: Any) -> list[str]:
    """What the graph takes: ids and mask always; token types only where the model has more than one type
    (RoBERTa's single type and DeBERTa-v2's none would be a dead input)."""
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


def task_outputs(model: Any, outputs: tuple[str, ...]) -> Any:
    """``model(**feeds)`` returning the task's outputs as a tuple in the task's order (ONNX outputs are positional)."""
    import torch

    class TaskOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        # Named parameters: torch.export matches dynamic shapes to argument names (no **kwargs).
        def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> tuple[Any, ...]:
            feeds = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
            out = self.model(input_ids=input_ids, **{k: v for k, v in feeds.items() if v is not None},
                             return_dict=True)
            return tuple(out[name] for name in outputs)

    return TaskOutputs().eval()


def export_onnx(model: Any, task: Task, out_dir: Path, opset: int | None) -> dict[str, Any]:
    """Export ``model`` to ``out_dir/model.onnx``; returns how it was made (the variant's ``made_by``)."""
    import torch

    names = input_names(model)
    vocab = int(getattr(model.config, "vocab_size", 100))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(vocab, 6), (TRACE_BATCH, TRACE_LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, TRACE_LENGTH // 2:] = 0  # a padded row, so the mask is not constant-folded
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    example = {k: example[k] for k in names}
    axes = {k: {0: "batch_size", 1: "sequence_length"} for k in names}  # optimum's names, as before
    return to_onnx(task_outputs(model, task.outputs), example, out_dir / "model.onnx", output_names=task.outputs,
                   axes=axes, opset=opset)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
