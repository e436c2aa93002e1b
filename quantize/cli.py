"""Sub-commands `optimize` and `quantize` (registered by onnxformer/cli.py, imported lazily there).

Choices are validated by our code, not argparse, so that a wrong value is one clear line and exit 1
like every other user error.
"""
from __future__ import annotations

import argparse

from onnxformer.errors import QuantizationError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="add the fp32-opt variant (ONNX Runtime transformer fusions)")
    p.add_argument("dir", help="artifact directory (from `onnxformer export`)")
    p.set_defaults(func=run_optimize)

    q = sub.add_parser("quantize", help="add an fp16 or int8 variant, measured against fp32 under an accuracy budget")
    q.add_argument("dir", help="artifact directory (from `onnxformer export`)")
    q.add_argument("--precision", required=True, help="fp16 | int8")
    q.add_argument("--mode", help="int8 only: dynamic (CPU default) | static (calibrated QDQ; TensorRT default)")
    q.add_argument("--target", help="cpu | cuda | tensorrt (default: cuda for fp16, cpu for int8)")
    q.add_argument("--calibration", help="text file, one text per line (default: the packaged calibration texts)")
    q.add_argument("--evaluation", help="text file of your own texts, one per line: every variant is also graded on "
                                        "them (default: every 5th text of --calibration, held out of calibration)")
    q.add_argument("--method", help="static int8 calibration: minmax (default) | entropy | percentile")
    q.add_argument("--budget", help="fidelity floor in (0, 1] for the task's metric (default: 0.997 min cosine for embeddings)")
    q.add_argument("--no-smooth", dest="smooth", action="store_false",
                   help="dynamic int8: skip SmoothQuant (activation outliers moved into the weights before quantizing)")
    q.add_argument("--from", dest="source", help="variant to start from (default: fp32-opt, or fp32 for TensorRT)")
    q.set_defaults(func=run_quantize)


def run_optimize(args: argparse.Namespace) -> int:
    from onnxformer.progress import console
    from onnxformer.quantize.pipeline import optimize_artifact

    result = optimize_artifact(args.dir, progress=lambda m: console.log(m))
    fused = ", ".join(f"{op}×{n}" for op, n in result.record.made_by["fused_ops"].items())
    console.print(f"fp32-opt: {fused or 'no fusions'} ({result.seconds:.1f}s)")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.progress import console
    from onnxformer.quantize.pipeline import quantize_artifact

    result = quantize_artifact(
        args.dir, args.precision, mode=args.mode, target=args.target, calibration=args.calibration,
        method=args.method, budget=_budget(args.budget), source=args.source, smooth=args.smooth,
        evaluation=args.evaluation, progress=lambda m: console.log(m),
    )
    task = load_manifest(args.dir).task
    console.print(f"{result.name}: {result.summary(task)} ({result.seconds:.1f}s)")
    return 0


def _budget(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise QuantizationError(f"--budget must be a number in (0, 1], got {text!r}") from None
