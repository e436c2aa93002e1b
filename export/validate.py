"""Validate an exported graph against its PyTorch reference on shapes it was not traced with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.errors import ValidationError
from onnxformer.runtime.session import create_session

# Texts of very different lengths, so a batch has heavily padded rows.
VALIDATION_TEXTS = (
    "Hi.",
    "ONNX Runtime runs the exported graph; PyTorch is the reference it must agree with.",
    "Der schnelle braune Fuchs springt über den faulen Hund, während es draußen regnet und stürmt.",
)


@dataclass(frozen=True)
class Case:
    name: str
    feeds: dict[str, np.ndarray]  # int64 (B, T)


def validation_cases(tokenizer: Any, input_names: list[str], vocab_size: int, seed: int = 0) -> list[Case]:
    """Shapes unlike optimum's trace shapes (batch 2 × 16): batch 1, batch 3 with padding, batch 4 × 45."""
    rng = np.random.default_rng(seed)
    enc = tokenizer(list(VALIDATION_TEXTS), padding=True, return_tensors="np")
    texts = {k: enc[k].astype(np.int64) for k in input_names if k in enc}

    def random_case(batch: int, length: int, pad_rows: bool) -> dict[str, np.ndarray]:
        ids = rng.integers(5, vocab_size, size=(batch, length), dtype=np.int64)
        mask = np.ones_like(ids)
        if pad_rows:  # rows of decreasing real length; padding at the end like a tokenizer does
            for row in range(1, batch):
                mask[row, length - row * length // (batch + 1):] = 0
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {k: feeds[k] for k in input_names}

    return [
        Case("texts-batch3-padded", texts),
        Case("random-batch1-seq7", random_case(1, 7, False)),
        Case("random-batch4-seq45-padded", random_case(4, 45, True)),
    ]


Reference = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def hf_reference(model: Any) -> Reference:
    """Run a transformers model on numpy feeds, returning numpy outputs by name."""
    import torch

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}

    return run


def validate(reference: Reference, onnx_path: Path, cases: list[Case], atol: float) -> dict[str, Any]:
    """Per-output max |Δ| (ORT vs PyTorch) over every case; over ``atol`` raises ValidationError."""
    session = create_session(onnx_path)
    output_names = [o.name for o in session.get_outputs()]
    per_case = []
    for case in cases:
        ort_out = _run_case(session, output_names, case)
        pt_out = reference(case.feeds)
        diffs = {name: _max_abs_diff(case, name, ort_out[name], pt_out[name]) for name in output_names}
        first = next(iter(case.feeds.values()))
        per_case.append({"case": case.name, "shape": list(first.shape), "max_abs_diff": diffs})
    return summarize(per_case, atol)


def summarize(cases: list[dict[str, Any]], atol: float, setting: str = "") -> dict[str, Any]:
    """Worst max |Δ| per output over ``cases`` (each with a "max_abs_diff" dict); over ``atol`` raises."""
    worst: dict[str, float] = {}
    for case in cases:
        for name, value in case["max_abs_diff"].items():
            worst[name] = max(worst.get(name, 0.0), value)
    result = {"atol": atol, "max_abs_diff": worst, "cases": cases, "passed": max(worst.values()) <= atol}
    if not result["passed"]:
        name = max(worst, key=lambda n: worst[n])
        raise ValidationError(
            f"ONNX output {name} differs from PyTorch by {worst[name]:.3g} > atol {atol:g}{setting}; "
            "the export is wrong for this architecture (try another --opset) or raise --atol if the gap is expected"
        )
    return result


def _run_case(session: Any, output_names: list[str], case: Case) -> dict[str, np.ndarray]:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    try:
        return dict(zip(output_names, session.run(output_names, case.feeds)))
    except (Fail, InvalidArgument, RuntimeException) as e:
        shapes = {k: list(v.shape) for k, v in case.feeds.items()}
        raise ValidationError(
            f"the exported graph cannot run {case.name} {shapes}: {str(e).splitlines()[0][:200]}; "
            "declare the varying axes as dynamic"
        ) from None


def _max_abs_diff(case: Case, name: str, got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:
        raise ValidationError(f"{case.name}: output {name} has shape {got.shape}, PyTorch gives {ref.shape}")
    delta = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    mask = case.feeds.get("attention_mask")
    if mask is not None and delta.ndim >= 2 and delta.shape[:2] == mask.shape:
        delta = delta[mask.astype(bool)]  # padded positions are undefined in both frameworks
    return float(delta.max()) if delta.size else 0.0
