"""The decoder's slot graph: every layer's attention and cache as one GroupQueryAttention (export/slot_attention.py),
for continuous batching (runtime/generation/slots.py).

Signature: (input_ids, position_ids, seqlens_k int32 [rows], total_sequence_length int32 scalar, past keys/values
flat (rows, kv_heads, max_len, head_size), logits_to_keep) → (logits, presents of the past's shape). The runtime binds
each present to its past's memory, so a call writes only the new tokens into each row's slot. There is no attention
mask: each row's length is its ``seqlens_k``.

The model runs without a transformers cache (use_cache=False): each attention layer gets only its new keys/values
and the registered attention function joins them with the layer's past.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from onnxformer.export import slot_attention
from onnxformer.export.decoder_graph import cache_names, zero_past
from onnxformer.export.dynamo import export_program, save_program
from onnxformer.export.generative_logits import INPUT as LOGITS_TO_KEEP
from onnxformer.export.generative_logits import kept_positions

_ROWS, _SEQUENCE, _MAX = 2, 3, 8  # example sizes (>= 2: torch.export specialises 0 and 1)


def unsupported(model: Any) -> str | None:
    """Why the slot graph cannot serve ``model`` (None: it can)."""
    cfg = model.config
    if getattr(cfg, "attn_logit_softcapping", None):
        return "attention logit softcapping"
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
        return "GPT-2's per-layer attention scaling / upcast reordering"
    heads = getattr(cfg, "num_attention_heads", None)
    size = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else None)
    if size is None or size % 8:
        return f"head size {size} (GroupQueryAttention needs a multiple of 8)"
    return None


def _module() -> type:
    import torch

    class DecoderSlots(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, input_ids, position_ids, seqlens_k, total_sequence_length, past, logits_to_keep):
            with slot_attention.active(slot_attention.SlotStep(list(past), seqlens_k, total_sequence_length)) as step:
                out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                 logits_to_keep=kept_positions(logits_to_keep, input_ids.shape[1]))
            presents = [t for i in range(len(past) // 2) for t in step.presents[i]]
            return (out.logits, *presents)

    return DecoderSlots


@contextlib.contextmanager
def slot_implementation(model: Any) -> Iterator[Any]:
    """``model`` with its attention through the slot op, for the duration (the reference is shared)."""
    name = slot_attention.register()
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "position_ids", "seqlens_k", "total_sequence_length",
              *cache_names(num_layers, "past_key_values"), LOGITS_TO_KEEP]
    return inputs, ["logits", *cache_names(num_layers, "present")]


def _example(model: Any) -> tuple[tuple[Any, ...], int]:
    import torch

    past = zero_past(model, _ROWS, _MAX)
    seqlens = torch.tensor([4, 5], dtype=torch.int32)
    args = (torch.full((_ROWS, _SEQUENCE), 4, dtype=torch.long), torch.arange(2, 5).expand(_ROWS, _SEQUENCE),
            seqlens, torch.tensor(6, dtype=torch.int32), past, torch.tensor([1], dtype=torch.long))
    return args, len(past) // 2


def forward(model: Any, *args: Any) -> Any:
    """The slot graph's forward in PyTorch (the eager op): what the export traces, for validation."""
    with slot_implementation(model):
        return _module()(model)(*args)


def export_decoder_slots(model: Any, path: Path, opset: int | None) -> None:
    """Write ``model``'s slot graph to ``path``."""
    import onnx_ir as ir

    args, num_layers = _example(model)
    heads, kv_heads = int(model.config.num_attention_heads), int(args[4][0].shape[1])
    with slot_implementation(model):
        rows = {0: "rows", 1: "sequence"}
        shapes = {"input_ids": rows, "position_ids": rows, "seqlens_k": {0: "rows"}, "total_sequence_length": None,
                  "past": [{0: "rows", 2: "max_sequence"}] * (2 * num_layers), "logits_to_keep": None}
        inputs, outputs = io_names(num_layers)
        program = export_program(_module()(model), args, dynamic_shapes=shapes, input_names=inputs,
                                 output_names=outputs, opset=opset, what=f"{type(model).__name__} with slot attention",
                                 translations=slot_attention.translation_table(heads, kv_heads))
    logits = program.model.graph.outputs[0]
    logits.shape = ir.Shape([logits.shape[0], "kept_sequence", logits.shape[2]])
    save_program(program, path)
