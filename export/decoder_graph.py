"""Decoder-only checkpoints → one ONNX graph with a KV cache, through ``torch.onnx.export(..., dynamo=True)``.

``DecoderWithCache`` is the graph's signature: flat tensors in and out, a transformers ``DynamicCache``
inside. The cache is built from the past tensors without the config, so every layer is a full-length
``DynamicLayer``: each present is past + new tokens, which is what the runtime's preallocated buffers
expect. Sliding-window families (Mistral, Gemma 3) still attend within their window — transformers'
mask functions apply the window from the config, whatever the cache holds.

``logits_to_keep`` (int64 [1]) selects the last k positions before the vocabulary projection (0: all);
the prompt step needs only the last one (export/generative_logits.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxformer.export.dynamo import export_program, save_program
from onnxformer.export.generative_logits import INPUT as LOGITS_TO_KEEP
from onnxformer.export.generative_logits import kept_positions

# Example sizes for tracing: torch.export specialises dimensions of size 0 and 1, so each is >= 2.
_BATCH, _SEQUENCE, _PAST = 2, 3, 4


def _module() -> type:
    import torch

    class DecoderWithCache(torch.nn.Module):
        """(input_ids, attention_mask, position_ids, past keys/values flat, logits_to_keep) →
        (logits, present keys/values flat), layer by layer as key, value."""

        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past, logits_to_keep):
            from transformers import DynamicCache

            cache = DynamicCache(list(zip(past[0::2], past[1::2])))
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True,
                             logits_to_keep=kept_positions(logits_to_keep, input_ids.shape[1]))
            present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    return DecoderWithCache


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """``prefix.{layer}.key`` / ``.value``, layer by layer (``past_key_values`` in, ``present`` out)."""
    return [f"{prefix}.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the graph, in the order of ``DecoderWithCache``'s signature."""
    inputs = ["input_ids", "attention_mask", "position_ids", *cache_names(num_layers, "past_key_values"),
              LOGITS_TO_KEEP]
    return inputs, ["logits", *cache_names(num_layers, "present")]


def zero_past(model: Any, rows: int, length: int) -> list[Any]:
    """Zero past keys/values flat, ``rows`` × kv heads × ``length`` × head size, shaped like the model's own cache
    (kv heads and head size read from one real step)."""
    import torch

    ids = torch.full((rows, 1), 4, dtype=torch.long)
    with torch.no_grad():
        layers = model(input_ids=ids, use_cache=True).cache.layers
    return [torch.zeros(rows, t.shape[1], length, t.shape[3], dtype=t.dtype)
            for layer in layers for t in (layer.keys, layer.values)]


def _example(model: Any) -> tuple[tuple[Any, ...], int]:
    """Example inputs shaped like the model's own cache."""
    import torch

    past = zero_past(model, _BATCH, _PAST)
    total = _PAST + _SEQUENCE
    args = (torch.full((_BATCH, _SEQUENCE), 4, dtype=torch.long), torch.ones(_BATCH, total, dtype=torch.long),
            torch.arange(_PAST, total).expand(_BATCH, _SEQUENCE), past, torch.tensor([1], dtype=torch.long))
    return args, len(past) // 2


def export_decoder_graph(model: Any, path: Path, opset: int | None) -> None:
    """Write ``model`` (a transformers causal LM) as one decoder graph with a KV cache to ``path``."""
    import onnx_ir as ir

    args, num_layers = _example(model)
    # Dimension names, not Dim objects: torch.onnx makes each a Dim.DYNAMIC and names the graph's axes after it.
    tokens = {0: "batch", 1: "sequence"}
    shapes = {"input_ids": tokens, "attention_mask": {0: "batch", 1: "total_sequence"}, "position_ids": tokens,
              "past": [{0: "batch", 2: "past_sequence"}] * (2 * num_layers), "logits_to_keep": None}
    inputs, outputs = io_names(num_layers)
    program = export_program(_module()(model), args, dynamic_shapes=shapes, input_names=inputs, output_names=outputs,
                             opset=opset, what=f"{type(model).__name__} with a KV cache")
    logits = program.model.graph.outputs[0]  # torch.export's name for the kept length is a formula of u0
    logits.shape = ir.Shape([logits.shape[0], "kept_sequence", logits.shape[2]])
    save_program(program, path)
