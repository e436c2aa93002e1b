"""Encoder-decoder checkpoints (T5, BART, Marian) → the three ONNX graphs the runtime steps through,
with ``torch.onnx.export(..., dynamo=True)``.

- ``encoder_model.onnx``: input_ids, attention_mask → last_hidden_state
- ``decoder_model.onnx`` (first step): input_ids, encoder_attention_mask, encoder_hidden_states →
  logits, present.{i}.decoder.key/value, present.{i}.encoder.key/value
- ``decoder_with_past_model.onnx``: input_ids, encoder_attention_mask, decoder_attention_mask,
  [decoder_position_ids], past_key_values.{i}.decoder.key/value, past_key_values.{i}.encoder.key/value →
  logits, present.{i}.decoder.key/value

Cache tensors are (batch, heads, sequence, head_size). The decoder wrappers rebuild transformers' own
``EncoderDecoderCache`` from the flat tensors and call the model's forward, so each family keeps its
own position handling (T5's relative bias, BART's learned offsets) and output head.

The step graph takes a decoder attention mask (batch, past + new) and, for families that embed absolute decoder
positions (BART, Marian: ``decoder.embed_positions``), the new tokens' positions (batch, new): so rows at
different steps can share one call, each right-aligned in the cache's columns with the columns before it masked
(runtime/generation/seq2seq_batch.py). T5's relative position bias depends only on key − query distances, which
right-alignment keeps, so T5 needs no position input.

Imports torch at the top: reached only from the export path (export/generative.py imports it lazily).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
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

    Without past, ``rest`` is ``(encoder_hidden_states,)``: the cross-attention cache is projected from
    it and returned after the self-attention one, per layer. With past, ``rest`` is the decoder attention mask,
    the positions (if the family embeds them) and 4 cache tensors per layer (self key, self value, cross key,
    cross value); the model then reuses the cross cache, so the encoder states are only a placeholder shaped like
    the encoder mask (which is all it reads of them).
    """

    def __init__(self, model: Any, with_past: bool):
        super().__init__()
        self.model, self.with_past = model, with_past
        self.layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.positions = with_past and embeds_positions(model)

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = positions = None
        if self.with_past:
            mask, rest = rest[0], rest[1:]
            if self.positions:
                positions, rest = rest[0], rest[1:]
            per_layer = [rest[4 * i: 4 * i + 4] for i in range(self.layers)]
            past = EncoderDecoderCache(DynamicCache([t[:2] for t in per_layer]),
                                       DynamicCache([t[2:] for t in per_layer]))
            shape = (*encoder_attention_mask.shape, self.model.config.d_model)
            hidden = encoder_attention_mask[..., None].expand(shape).to(self.model.dtype)
        else:
            past, hidden = EncoderDecoderCache(DynamicCache(), DynamicCache()), rest[0]
        with row_positions(self.model, positions):
            out = self.model(encoder_outputs=(hidden,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=input_ids, decoder_attention_mask=mask, cache=past, use_cache=True,
                             return_dict=True)
        kinds = [out.cache.self_attention_cache] + ([] if self.with_past else [out.cache.cross_attention_cache])
        presents = [t for i in range(self.layers) for c in kinds for t in (c.layers[i].keys, c.layers[i].values)]
        return (out.logits, *presents)


def embeds_positions(model: Any) -> bool:
    """Whether the decoder adds absolute position embeddings (BART, Marian), which the step graph must take per row."""
    return getattr(model.get_decoder(), "embed_positions", None) is not None


@contextmanager
def row_positions(model: Any, positions: torch.Tensor | None) -> Iterator[None]:
    """Within the block, the decoder embeds ``positions`` (batch, new) instead of the cache length + arange that
    transformers computes for the whole batch (one length for every row). Nothing changes for ``None``."""
    if positions is None:
        yield
        return

    def per_row(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, {**kwargs, "position_ids": positions}

    def as_rows(module: Any, args: Any, kwargs: Any, output: torch.Tensor) -> torch.Tensor:
        # BART's embedding unsqueezes given positions as if they were one row: lay its output out as (batch, new, C)
        return output.reshape(*positions.shape, output.shape[-1])

    embed = model.get_decoder().embed_positions
    handles = [embed.register_forward_pre_hook(per_row, with_kwargs=True),
               embed.register_forward_hook(as_rows, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    step_extra = [torch.ones(_BATCH, _PAST + _TARGET, dtype=torch.long)]  # decoder attention mask
    step_extra[0][0, :2] = 0  # one row right-aligned after masked columns, as in the continuous batch
    if step.positions:
        past_lengths = step_extra[0][:, :_PAST].sum(dim=1, keepdim=True)  # each row's own tokens before the new ones
        step_extra.append(past_lengths + torch.arange(_TARGET)[None, :])  # decoder positions (batch, target)
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
        (DECODER_WITH_PAST, step, (_ids(_TARGET), _mask(), *step_extra, *past),
         ["input_ids", "encoder_attention_mask", "decoder_attention_mask",
          *(["decoder_position_ids"] if step.positions else []),
          *_cache_names("past_key_values", layers, ("decoder", "encoder"))],
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
    """Batch, source length, target length, past length and past + target are dynamic; one name per concept,
    shared by inputs (names, not Dim objects: torch.onnx makes each a Dim.DYNAMIC, so the mask's length may be
    the sum of two others, and names the graph's axes after them). Shaped like ``forward``'s signature: the two
    named inputs, then one tuple for ``*rest``."""
    batch, source = "batch_size", "encoder_sequence_length"
    target, past, total = "decoder_sequence_length", "past_decoder_sequence_length", "total_decoder_sequence_length"
    encoder_graph = "attention_mask" in inputs
    shapes = {"input_ids": {0: batch, 1: source if encoder_graph else target}, "attention_mask": {0: batch, 1: source},
              "encoder_attention_mask": {0: batch, 1: source}, "encoder_hidden_states": {0: batch, 1: source},
              "decoder_attention_mask": {0: batch, 1: total}, "decoder_position_ids": {0: batch, 1: target}}
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
