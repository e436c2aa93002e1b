"""Validate an exported graph against its PyTorch reference on shapes it was not traced with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def validate(model: Any, onnx_path: Path, cases: list[Case], atol: float) -> dict[str, Any]:
    """Per-output max |Δ| (ORT vs PyTorch) over every case; over ``atol`` raises ValidationError."""
    import torch

    session = create_session(onnx_path)
    output_names = [o.name for o in session.get_outputs()]
    worst: dict[str, float] = {name: 0.0 for name in output_names}
    per_case = []
    for case in cases:
        ort_out = dict(zip(output_names, session.run(output_names, case.feeds)))
        with torch.inference_mode():
            pt_out = model(**{k: torch.from_numpy(v) for k, v in case.feeds.items()})
        diffs = {}
        mask = case.feeds.get("attention_mask")
        for name in output_names:
            ref = pt_out[name].numpy()
            got = ort_out[name]
            if got.shape != ref.shape:
                raise ValidationError(f"{case.name}: output {name} has shape {got.shape}, PyTorch gives {ref.shape}")
            delta = np.abs(got - ref)
            if mask is not None and delta.ndim >= 2 and delta.shape[:2] == mask.shape:
                delta = delta[mask.astype(bool)]  # padded positions are undefined in both frameworks
            diffs[name] = float(delta.max()) if delta.size else 0.0
            worst[name] = max(worst[name], diffs[name])
        per_case.append({"case": case.name, "shape": list(case.feeds["input_ids"].shape), "max_abs_diff": diffs})
    result = {"atol": atol, "max_abs_diff": worst, "cases": per_case, "passed": max(worst.values()) <= atol}
    if not result["passed"]:
        name = max(worst, key=worst.get)
        raise ValidationError(
            f"ONNX output {name} differs from PyTorch by {worst[name]:.3g} > atol {atol:g}; "
            "the export is wrong for this architecture (try another --opset) or raise --atol if the gap is expected"
        )
    return result
