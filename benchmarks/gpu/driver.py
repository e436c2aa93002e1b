"""GPU check driver (run by run_gpu.sh inside the GPU venv): build the artifacts, benchmark TensorRT and
CUDA against PyTorch CUDA fp32/fp16, write result files, all within the time limit.

    python -m onnxformer.benchmarks.gpu.driver --out benchmarks/gpu/results [--models minilm,bert-base]

When the time limit is reached, the benchmark in progress stops as on Ctrl-C and its partial
results are written (marked interrupted).
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from onnxformer.benchmarks.gpu.plan import GPU_PROVIDERS, TIME_LIMIT_SECONDS, check_gpu, gpu_settings, seconds_per_config
from onnxformer.runtime.files import atomic_write_bytes, atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def load_gpu_libraries() -> list[str]:
    """CUDA torch first, then let ONNX Runtime load CUDA/cuDNN from the same pip packages; returns ORT's providers."""
    import torch  # noqa: F401  (loads the CUDA libraries ORT can share)
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu ≥ 1.21
        ort.preload_dlls()
    return ort.get_available_providers()


def arm_deadline(deadline: float) -> None:
    """At the deadline, interrupt like Ctrl-C: the harness keeps what it measured and the driver writes it."""
    def expire(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, deadline - time.time()))


def summary_markdown(gpu: str, reports: dict[str, dict[str, Any]]) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"# GPU check: {gpu}", "", "Model-only p50 at batch 1 × 128 tokens; ratios are the reference's p50 "
             "divided by the best variant's (> 1: ONNX Runtime is faster).", "",
             "| model | best variant (within fidelity budget) | p50 ms | PyTorch CUDA fp32 p50 ms | vs PyTorch fp32 | vs PyTorch fp16 | interrupted |",
             "|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        h = report.get("headline_gpu") or {}
        lines.append(f"| {name} | {h.get('best_variant')} | {f(h.get('best_p50_ms'))} | {f(h.get('pytorch_fp32_p50_ms'))} "
                     f"| {f(h.get('speedup_vs_pytorch_fp32'))}× | {f(h.get('speedup_vs_pytorch_fp16'))}× "
                     f"| {'yes' if report.get('interrupted') else 'no'} |")
    lines += ["", *[f"- [{name}](gpu-{name}.md)" for name in reports]]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark TensorRT/CUDA vs PyTorch CUDA on this machine's GPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--deadline", type=float, help="Unix time by which to finish (default: now + 8 minutes)")
    p.add_argument("--work", type=Path, help="build directory (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from onnxformer.benchmarks import run_suite
    from onnxformer.benchmarks.harness import run_benchmark
    from onnxformer.benchmarks.providers import resolve
    from onnxformer.benchmarks.report import write_report

    args = parse(argv)
    deadline = args.deadline or time.time() + TIME_LIMIT_SECONDS
    gpu = check_gpu()
    providers = resolve(GPU_PROVIDERS, load_gpu_libraries())  # a clear error when TensorRT/CUDA did not load
    args.out.mkdir(parents=True, exist_ok=True)
    arm_deadline(deadline - 20.0)  # keep 20 s to write files
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="onnxformer-gpu-") as tmp:
        work = args.work or Path(tmp)
        try:
            models = [m for m in args.models.split(",") if m]
            for i, model in enumerate(models):
                name = run_suite.NAMES[model]
                artifact = work / name
                run_suite.export(run_suite.checkpoint(model, work), artifact, name)
                note = run_suite.quantize(artifact, "gpu")
                print(f"[{model}] {note}", flush=True)
                shapes = len(gpu_settings().batches) * len(gpu_settings().seqs)
                settings = gpu_settings(seconds_per_config(deadline - time.time(), configs=8, shapes=shapes,
                                                           models=len(models) - i))
                settings.providers = providers
                reports[name] = run_benchmark(artifact, settings, lambda d, t, what: print(f"  {d}/{t} {what}", flush=True))
                write_report(reports[name], args.out / f"gpu-{name}.json")
                if reports[name]["interrupted"]:
                    break
        except KeyboardInterrupt:
            print("time limit reached while building; writing what was measured", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    atomic_write_json(args.out / "gpu-summary.json", {"gpu": gpu, "models": {n: r.get("headline_gpu") for n, r in reports.items()}})
    atomic_write_bytes(args.out / "gpu-summary.md", summary_markdown(gpu, reports).encode())
    print((args.out / "gpu-summary.md").read_text())
    return 0


if __name__ == "__main__":
    from onnxformer.errors import OnnxformerError

    try:
        sys.exit(main())
    except OnnxformerError as e:
        print(f"gpu check: error: {e}", file=sys.stderr)
        sys.exit(1)
