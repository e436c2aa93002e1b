"""The quantize stage of `onnxformer build`: fp32-opt, then fp16 and dynamic int8 under the default budget."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from onnxformer.errors import QuantizationError
from onnxformer.quantize.fidelity import BUDGETS
from onnxformer.runtime.manifest import load_manifest

Row = dict[str, Any]


def quantize_stage(args: argparse.Namespace, out: Path, progress: Callable[[str], None]) -> list[Row]:
    from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact

    task = load_manifest(out)["task"]
    if task not in BUDGETS:  # decoders and seq2seq: nothing to fuse or quantize here yet
        return [{"stage": "quantize", "variant": "-", "detail": f"skipped: no quantize recipe for {task}", "seconds": 0.0}]
    opt = optimize_artifact(out, progress=progress)
    fused = ", ".join(f"{op}×{n}" for op, n in opt.record["made_by"]["fused_ops"].items())
    rows = [{"stage": "quantize", "variant": opt.name, "detail": f"{fused}; {opt.summary(task)}", "seconds": opt.seconds}]
    for precision in ("fp16", "int8"):
        start = time.perf_counter()
        try:
            result = quantize_artifact(out, precision, progress=progress)
        except QuantizationError as e:  # a missed budget is a result to show, not a reason to stop the build
            rows.append({"stage": "quantize", "variant": precision, "detail": f"not built: {e}",
                         "seconds": time.perf_counter() - start})
            continue
        rows.append({"stage": "quantize", "variant": result.name, "detail": result.summary(task),
                     "seconds": result.seconds})
    return rows
