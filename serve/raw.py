"""Raw tensors: checking a KServe v2 request against the graph's declared inputs, and warm-up feeds.

The manifest's ``TensorSpec``s are the contract: every input by name, of its dtype (INT32 is accepted for an
INT64 input), of its rank, fixed dims as declared. As in the TensorRT shape profile (runtime/providers.py),
a dynamic axis 0 is the batch (held to ``--max-texts``) and the other dynamic axes are the sequence (held to
the token limit, where there is one); dims that share an axis name must agree.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxformer.artifact.dtypes import from_name
from onnxformer.artifact.manifest import TensorSpec, tensor_spec
from onnxformer.serve.kserve import InferRequest, Tensor, v2_datatype
from onnxformer.serve.statuses import ErrorKind, ServingError

if TYPE_CHECKING:
    from onnxformer.serve.service import ModelService

BATCH, SEQUENCE = "batch", "sequence"
_UNNAMED = ("", "None")  # dynamic dims ONNX Runtime reports without a name: nothing to agree on


def raw_feeds(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    """The request's tensors as the model's feeds, or a 4xx saying what to send instead."""
    specs = input_specs(service)
    expected = [s.name for s in specs]
    if sorted(req.inputs) != sorted(expected):
        text = ' (or the "text" BYTES input)' if service.routes.text_outputs else ""
        raise ServingError(f"inputs {sorted(req.inputs)} do not match the model's: send {expected}{text}",
                           ErrorKind.BAD_REQUEST)
    for spec in specs:
        _check_tensor(req.inputs[spec.name], spec)
    sizes = _axis_sizes(req, specs)
    if sizes[BATCH]:
        service.check_count(sizes[BATCH].pop(), "rows")
    longest = max(sizes[SEQUENCE], default=0)
    if service.max_tokens is not None and longest > service.max_tokens:
        raise ServingError(f"sequence length {longest} is over the limit of {service.max_tokens} tokens",
                           ErrorKind.UNPROCESSABLE)
    feeds: dict[str, np.ndarray] = {s.name: req.inputs[s.name].array.astype(from_name(s.dtype).numpy, copy=False)
                                    for s in specs}
    _check_vocabulary(service, feeds)
    return feeds


def input_specs(service: ModelService) -> list[TensorSpec]:
    """The loaded graph's inputs, as the manifest declares them (the session's own where it lacks one)."""
    model = service.model
    return [model.manifest.input(n) or tensor_spec(model.runner.inputs[n]) for n in model.input_names]


def zero_feeds(specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Zeros of each input's dtype, every dynamic axis of size 1: the warm-up call of a model without a tokenizer."""
    return {s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], dtype=from_name(s.dtype).numpy)
            for s in specs}


def _check_tensor(t: Tensor, spec: TensorSpec) -> None:
    want = v2_datatype(spec.dtype)
    accepted = (want, "INT32") if want == "INT64" else (want,)
    if t.datatype not in accepted:
        alternative = " (or INT32)" if len(accepted) > 1 else ""
        raise ServingError(f"input {t.name!r} must be {want}{alternative}, got {t.datatype}", ErrorKind.BAD_REQUEST)
    fits = len(t.shape) == len(spec.shape) and all(
        n > 0 and (not isinstance(d, int) or n == d) for n, d in zip(t.shape, spec.shape))
    if not fits:
        raise ServingError(f"input {t.name!r} must be {_layout(spec)} with every dim > 0, got {t.shape}",
                           ErrorKind.BAD_REQUEST)


def _layout(spec: TensorSpec) -> str:
    """``[batch, sequence]``, ``[batch, 8]``: what a tensor of this spec looks like."""
    dims = [str(d) if isinstance(d, int) else (BATCH if i == 0 else SEQUENCE) for i, d in enumerate(spec.shape)]
    return f"[{', '.join(dims)}]"


def _axis_sizes(req: InferRequest, specs: list[TensorSpec]) -> dict[str, set[int]]:
    """The batch and sequence sizes the request uses; 400 when inputs disagree on the batch or on a shared axis."""
    named: dict[str, dict[str, int]] = {}
    sizes: dict[str, set[int]] = {BATCH: set(), SEQUENCE: set()}
    for spec in specs:
        shape = req.inputs[spec.name].shape
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            sizes[BATCH if i == 0 else SEQUENCE].add(shape[i])
            key = f"axis 0 ({BATCH})" if i == 0 else (None if d in _UNNAMED else f"axis {d!r}")
            if key is not None:
                named.setdefault(key, {})[spec.name] = shape[i]
    for axis, by_input in named.items():
        if len(set(by_input.values())) > 1:
            raise ServingError(f"inputs disagree on {axis}: {by_input}; all inputs must share it",
                               ErrorKind.BAD_REQUEST)
    return sizes


def _check_vocabulary(service: ModelService, feeds: dict[str, np.ndarray]) -> None:
    """Ids index embedding tables: out of range is the client's error (a 400), not ONNX Runtime's."""
    vocab = service.model.manifest.architecture.vocab_size or service.vocab_size
    ids = feeds.get("input_ids")
    if ids is not None and vocab and ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ServingError(f"input_ids must lie in [0, {vocab}) for this model's vocabulary", ErrorKind.BAD_REQUEST)
    mask = feeds.get("attention_mask")
    if mask is not None and mask.size and not np.isin(mask, (0, 1)).all():
        raise ServingError("attention_mask values must be 0 or 1", ErrorKind.BAD_REQUEST)
    types = feeds.get("token_type_ids")
    if types is not None and types.size and (types.min() < 0 or types.max() > 1):
        raise ServingError("token_type_ids values must be 0 (first segment) or 1 (second)", ErrorKind.BAD_REQUEST)
