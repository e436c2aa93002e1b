"""Attention with the KV cache in per-row slots, as one ``torch.library`` custom op that exports as ONNX Runtime's
``com.microsoft.GroupQueryAttention`` (past and present bound to one buffer by the runtime: no Concat, no Transpose
of the cache, the scale an attribute).

The op's contract is GroupQueryAttention's (onnxruntime/contrib_ops/cpu/bert/group_query_attention_helper.h):
each row's tokens are left-aligned in its slot of a (rows, kv_heads, max_len, head_size) cache; ``seqlens_k`` is
the row's total length after this call − 1 (int32 per row) and ``total_sequence_length`` (int32 scalar) the widest
such total. A call is a first prompt when its tokens are the whole total (rows right-padded; the past is not read),
else the new tokens follow the row's ``seqlens_k + 1 − S`` cached ones (S > 1 only for one row: a chunked prompt).
The eager implementation is exact attention under that contract, so an exported program still validates against
PyTorch; transformers reaches it through an attention function registered under ``IMPLEMENTATION``, which reads the
layer's past and the lengths from the step being traced (``SlotStep``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

IMPLEMENTATION = "onnxformer_slots"
_ACTIVE: list[SlotStep] = []  # the step a wrapper's forward is running (a stack: forwards do not nest today)


@dataclass
class SlotStep:
    """What one forward of the slot graph hands every attention layer: its past, the row lengths, and where the
    layer leaves its presents."""

    past: list[Any]  # per layer key, value: (rows, kv_heads, max_len, head_size)
    seqlens_k: Any  # (rows,) int32
    total: Any  # int32 scalar
    presents: dict[int, tuple[Any, Any]] = field(default_factory=dict)


@contextlib.contextmanager
def active(step: SlotStep) -> Iterator[SlotStep]:
    _ACTIVE.append(step)
    try:
        yield step
    finally:
        _ACTIVE.pop()


def _eager(query: Any, key: Any, value: Any, past_key: Any, past_value: Any, seqlens_k: Any, total: Any,
           scale: float, window: int) -> tuple[Any, Any, Any]:
    """GroupQueryAttention's result, row by row: (B, S, heads, head_size) and the presents."""
    import torch

    rows, heads, length, _ = query.shape
    group = heads // key.shape[1]
    first = length == int(total.reshape(-1)[0])
    present_key, present_value = past_key.clone(), past_value.clone()
    out = torch.zeros(rows, length, heads, query.shape[3], dtype=query.dtype)
    for b in range(rows):
        seen = int(seqlens_k[b]) + 1
        start = 0 if first else seen - length
        present_key[b, :, start:start + length] = key[b]
        present_value[b, :, start:start + length] = value[b]
        real = min(length, seen)  # a right-padded prompt row: its padding queries are left as zeros
        keys = present_key[b, :, :start + real].repeat_interleave(group, dim=0)
        values = present_value[b, :, :start + real].repeat_interleave(group, dim=0)
        scores = (query[b, :, :real].float() @ keys.float().transpose(1, 2)) * scale
        q_at = torch.arange(real)[:, None] + start
        k_at = torch.arange(start + real)[None, :]
        hidden = k_at > q_at
        if window > 0:
            hidden |= k_at <= q_at - window  # a window of ``window`` tokens, the query's own included
        probs = scores.masked_fill(hidden, float("-inf")).softmax(-1)
        out[b, :real] = (probs @ values.float()).to(query.dtype).transpose(0, 1)
    return out, present_key, present_value


_SCHEMA = ("(Tensor query, Tensor key, Tensor value, Tensor past_key, Tensor past_value, Tensor seqlens_k, "
           "Tensor total, float scale, int window) -> (Tensor, Tensor, Tensor)")


def _define() -> Any:
    import torch

    # The schema spelled out: this module's annotations are strings (``from __future__ import annotations``)
    @torch.library.custom_op("onnxformer::slot_attention", mutates_args=(), schema=_SCHEMA)
    def slot_attention(query, key, value, past_key, past_value, seqlens_k, total, scale, window):
        return _eager(query, key, value, past_key, past_value, seqlens_k, total, scale, window)

    @slot_attention.register_fake
    def _(query, key, value, past_key, past_value, seqlens_k, total, scale, window):
        rows, heads, length, size = query.shape
        return query.new_empty(rows, length, heads, size), torch.empty_like(past_key), torch.empty_like(past_value)

    return slot_attention


_OP: list[Any] = []


def op() -> Any:
    """The custom op (defined once per process)."""
    if not _OP:
        _OP.append(_define())
    return _OP[0]


def _gqa_op() -> Any:
    """``com.microsoft.GroupQueryAttention`` as an onnxscript op. ONNX's schema registry has no contrib ops, so its
    schema (the part used here: query/key/value, past, seqlens_k, total_sequence_length) is declared for the tracer."""
    import onnxscript
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    schema = OpSchema(
        "GroupQueryAttention", "com.microsoft", 1,
        inputs=[param(n, "T") for n in ("query", "key", "value", "past_key", "past_value")]
        + [param("seqlens_k", "M"), param("total_sequence_length", "M")],
        outputs=[param(n, "T") for n in ("output", "present_key", "present_value")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""),
                          ("M", ["tensor(int32)"], "")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, required=True),
                    OpSchema.Attribute("kv_num_heads", OpSchema.AttrType.INT, required=True),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, required=False),
                    OpSchema.Attribute("local_window_size", OpSchema.AttrType.INT, required=False)])
    return onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), "GroupQueryAttention", schema)


def translation_table(num_heads: int, kv_heads: int) -> dict[Any, Any]:
    """torch.onnx's ``custom_translation_table`` entry: the op as one GroupQueryAttention node."""
    from onnxscript import opset18 as ox

    gqa = _gqa_op()

    def ints(*values: int) -> Any:  # an INT64 constant (onnxscript types Constant's output as any tensor type)
        return ox.Constant(value_ints=list(values))

    def slot_attention(query, key, value, past_key, past_value, seqlens_k, total, scale: float, window: int):
        # (B, heads, S, head) → (B, S, heads × head): GroupQueryAttention takes BSNH-packed query/key/value
        flat = lambda t: ox.Reshape(ox.Transpose(t, perm=[0, 2, 1, 3]), ints(0, 0, -1))
        out, present_key, present_value = gqa(
            flat(query), flat(key), flat(value), past_key, past_value, seqlens_k, ox.Reshape(total, ints(1)),
            num_heads=num_heads, kv_num_heads=kv_heads, scale=scale, local_window_size=window if window > 0 else -1)
        out = ox.Reshape(out, ints(0, 0, num_heads, -1))
        return out, present_key, present_value

    import torch

    op()
    return {torch.ops.onnxformer.slot_attention.default: slot_attention}


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                      dropout: float = 0.0, sliding_window: int | None = None, softcap: float | None = None,
                      **_: Any) -> tuple[Any, None]:
    """transformers' attention-function signature: (B, S, heads, head_size) from the layer's new keys/values and the
    active step's past for this layer."""
    step = _ACTIVE[-1]
    layer = int(module.layer_idx)
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    # transformers' window and ORT 1.32's local_window_size both count the query's own token (measured against
    # PyTorch on Mistral and Gemma 3; ORT's older CPU kernel saw one token more)
    window = int(sliding_window) if sliding_window else 0
    out, present_key, present_value = op()(query, key, value, step.past[2 * layer], step.past[2 * layer + 1],
                                           step.seqlens_k, step.total, scale, window)
    step.presents[layer] = (present_key, present_value)
    return out, None


def register() -> str:
    """Register the attention function with transformers (idempotent); its implementation name."""
    from transformers import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, attention_forward)
    return IMPLEMENTATION
