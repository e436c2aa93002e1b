"""The quantize stage of `onnxformer build`: fp32-opt, then fp16 and dynamic int8 under the default budget
for encoders; the generative recipes (fp16, int8, int4) for generative artifacts."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact.manifest import load_manifest
from onnxformer.artifact.tasks import budgeted
from onnxformer.errors import QuantizationError

Row = dict[str, Any]
Progress = Callable[[str], None]


def quantize_stage(out: Path, progress: Progress) -> list[Row]:
    manifest = load_manifest(out)
    if manifest.generation is not None:
        return _generative(out, progress)
    if manifest.task not in budgeted():
        return [_row("-", f"skipped: no quantize recipe for {manifest.task}", 0.0)]
    return _encoder(out, manifest.task, progress)


def _encoder(out: Path, task: str, progress: Progress) -> list[Row]:
    from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact

    opt = optimize_artifact(out, progress=progress)
    fused = ", ".join(f"{op}×{n}" for op, n in opt.record.made_by["fused_ops"].items())
    rows = [_row(opt.name, f"{fused}; {opt.summary(task)}", opt.seconds)]
    for precision in ("fp16", "int8"):
        start = time.perf_counter()
        try:
            result = quantize_artifact(out, precision, progress=progress)
        except QuantizationError as e:  # a missed budget is a result to show, not a reason to stop the build
            rows.append(_row(precision, f"not built: {e}", time.perf_counter() - start))
            continue
        rows.append(_row(result.name, result.summary(task), result.seconds))
    return rows


def _generative(out: Path, progress: Progress) -> list[Row]:
    from onnxformer.quantize.generative import GenerativeQuantizer

    quantizer = GenerativeQuantizer.open(out, progress=progress)
    rows = []
    for recipe in quantizer.recipes:
        start = time.perf_counter()
        try:  # one recipe failing (int4 on a model whose widths the block size does not divide) is a row
            fid = quantizer.add(recipe).variant(recipe.name).fidelity
        except QuantizationError as e:
            rows.append(_row(recipe.name, f"not built: {e}", time.perf_counter() - start))
            continue
        rows.append(_row(recipe.name, f"next-token agreement {fid['next_token_agreement']:.3f}, "
                                      f"perplexity Δ {fid['perplexity_delta']:+.4f}", time.perf_counter() - start))
    return rows


def _row(variant: str, detail: str, seconds: float) -> Row:
    return {"stage": "quantize", "variant": variant, "detail": detail, "seconds": seconds}
