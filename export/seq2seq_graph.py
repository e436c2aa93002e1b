"""Encoder-decoder checkpoints (T5, BART, Marian) → the three ONNX graphs the runtime steps through,
with ``torch.onnx.export(..., dynamo=True)``.

- ``encoder_model.onnx``: input_ids, attention_mask → last_hidden_state
- ``decoder_model.onnx`` (first step): input_ids, encoder_attention_mask, encoder_hidden_states →
  logits, present.{i}.decoder.key/value, present.{i}.encoder.key/value
- ``decoder_with_past_model.onnx``: input_ids, encoder_attention_mask, past_key_values.{i}.decoder.key/value,
  past_key_values.{i}.encoder.key/value → logits, present.{i}.decoder.key/value

Cache tensors are (batch, heads, sequence, head_size). The decoder wrappers rebuild transformers' own
``EncoderDecoderCache`` from the flat tensors and call the model's forward, so each family keeps its
own position handling (T5's relative bias, BART's learned offsets) and output head.

Imports torch at the top: reached only from the export path (export/generative.py imports it lazily).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.export import Dim
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from onnxformer.export.dynamo import export_program, save_program

ENCODER, DECODER, DECODER_WITH_PAST = "encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"
# Example sizes for tracing: all >= 2 and distinct, so torch.export specializes none of the dynamic dims.
_BATCH, _SOURCE, _TARGET, _PAST = 2, 7, 3, 5


class EncoderGraph(torch.nn.Module):
    """The encoder stack alone: input_ids, attention_mask → last_hidden_state."""

    def __init__(self, model: Any):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class DecoderGraph(torch.nn.Module):
    """One decoder step through the full model's forward (head and scaling included), cache flat in and out.

    Without past, ``cache`` is ``(encoder_hidden_states,)``: the cross-attention cache is projected from
    it and returned after the self-attention one, per layer. With past, ``cache`` holds 4 tensors per
    layer (self key, self value, cross key, cross value); the model then reuses the cross cache, so the
    encoder states are only a placeholder shaped like the encoder mask (which is all it reads of them).
    """

    def __init__(self, model: Any, with_past: bool):
        super().__init__()
        self.model, self.with_past = model, with_past
        self.layers = model.config.get_text_config(decoder=True).num_hidden_layers

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.with_past:
            per_layer = [cache[4 * i: 4 * i + 4] for i in range(self.layers)]
            past = EncoderDecoderCache(DynamicCache([t[:2] for t in per_layer]),
                                       DynamicCache([t[2:] for t in per_layer]))
            shape = (*encoder_attention_mask.shape, self.model.config.d_model)
            hidden = encoder_attention_mask[..., None].expand(shape).to(self.model.dtype)
        else:
            past, hidden = EncoderDecoderCache(DynamicCache(), DynamicCache()), cache[0]
        out = self.model(encoder_outputs=(hidden,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=input_ids, cache=past, use_cache=True, return_dict=True)
        kinds = [out.cache.self_attention_cache] + ([] if self.with_past else [out.cache.cross_attention_cache])
        presents = [t for i in range(self.layers) for c in kinds for t in (c.layers[i].keys, c.layers[i].values)]
        return (out.logits, *presents)


def export_seq2seq_graphs(model: Any, out_dir: Path, opset: int | None) -> None:
    """Write the encoder, first-step decoder and decoder-with-past graphs of ``model`` into ``out_dir``.

    Each graph is saved atomically (export/dynamo.py); the caller stages the directory as a whole.
    Raises ExportError, naming the graph, when torch.export or the ONNX translation fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    first, step = DecoderGraph(model, with_past=False).eval(), DecoderGraph(model, with_past=True).eval()
    layers = first.layers
    with torch.inference_mode():
        hidden = model.get_encoder()(input_ids=_ids(_SOURCE), attention_mask=_mask()).last_hidden_state
        cross = first(_ids(_TARGET), _mask(), hidden)[1:]  # a real cross cache, for its shapes
    # One tensor per input: torch.export merges inputs that are the same tensor object into one graph input.
    past = []
    for i in range(layers):
        key, value = cross[4 * i + 2], cross[4 * i + 3]
        shape = (*key.shape[:2], _PAST, key.shape[3])
        past += [torch.randn(shape, dtype=key.dtype, generator=_rng()) for _ in range(2)] + [key, value]
    graphs = [
        (ENCODER, EncoderGraph(model).eval(), (_ids(_SOURCE), _mask()), ["input_ids", "attention_mask"],
         ["last_hidden_state"]),
        (DECODER, first, (_ids(_TARGET), _mask(), hidden),
         ["input_ids", "encoder_attention_mask", "encoder_hidden_states"],
         ["logits", *_cache_names("present", layers, ("decoder", "encoder"))]),
        (DECODER_WITH_PAST, step, (_ids(_TARGET), _mask(), *past),
         ["input_ids", "encoder_attention_mask", *_cache_names("past_key_values", layers, ("decoder", "encoder"))],
         ["logits", *_cache_names("present", layers, ("decoder",))]),
    ]
    for file, module, args, inputs, outputs in graphs:
        _export_graph(module, args, inputs, outputs, out_dir / file, opset, type(model).__name__)


def _export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
                  path: Path, opset: int | None, model_name: str) -> None:
    """One graph through export/dynamo.py's ``export_program`` (positional: the dotted cache names are no kwargs)."""
    program = export_program(module, args, input_names=inputs, output_names=outputs,
                             dynamic_shapes=_dynamic_shapes(inputs), opset=opset, what=f"the {model_name} {path.name}")
    save_program(program, path)


def _dynamic_shapes(inputs: list[str]) -> tuple[Any, ...]:
    """Batch, source length, target length and past length are dynamic; one Dim per concept, shared by inputs.
    Shaped like ``forward``'s signature: the two named inputs, then one tuple for ``*cache``."""
    batch, source = Dim("batch_size"), Dim("encoder_sequence_length")
    target, past = Dim("decoder_sequence_length"), Dim("past_decoder_sequence_length")
    encoder_graph = "attention_mask" in inputs
    shapes = {"input_ids": {0: batch, 1: source if encoder_graph else target}, "attention_mask": {0: batch, 1: source},
              "encoder_attention_mask": {0: batch, 1: source}, "encoder_hidden_states": {0: batch, 1: source}}
    for name in inputs:
        if name.startswith("past_key_values."):
            shapes[name] = {0: batch, 2: past if ".decoder." in name else source}
    named = (shapes[inputs[0]], shapes[inputs[1]])
    return (*named, tuple(shapes[name] for name in inputs[2:])) if len(inputs) > 2 else named


def _cache_names(prefix: str, layers: int, kinds: tuple[str, ...]) -> list[str]:
    return [f"{prefix}.{i}.{kind}.{part}" for i in range(layers) for kind in kinds for part in ("key", "value")]


def _rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)  # example values only; the caller's global RNG is left alone


def _ids(length: int) -> torch.Tensor:
    return torch.randint(4, 16, (_BATCH, length), dtype=torch.long, generator=_rng())


def _mask() -> torch.Tensor:
    mask = torch.ones(_BATCH, _SOURCE, dtype=torch.long)
    mask[1, -2:] = 0  # one padded row: a mask that varies, as at run time
    return mask
