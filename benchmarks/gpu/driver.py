"""GPU check driver (run by run_gpu.sh): build the artifacts, benchmark CUDA (and TensorRT where it starts)
against PyTorch CUDA fp32, fp16 autocast, fp16 weights, fp16 + SDPA and torch.compile, write result files, all
within the time limit. Whatever cannot run (no GPU, no CUDA provider, no TensorRT) is written as
"not measured: why" (summary.py).

    python -m gpu.driver --out benchmarks/gpu/results [--models minilm,bert-base]

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

from gpu.plan import TIME_LIMIT_SECONDS, check_gpu, gpu_settings, provider_problem, seconds_per_config, tensorrt_library
from gpu.summary import planned_configs, write_summary
from onnxformer.errors import OnnxformerError, ProviderError

RESULTS = Path(__file__).resolve().parent / "results"
MIXED_MODEL = "minilm"  # the mixed-length throughput run's model (its target: ≥ 2× PyTorch fp16 on the same GPU)


def load_gpu_libraries() -> list[str]:
    """CUDA torch first, then let ONNX Runtime load CUDA/cuDNN from the same pip packages; returns ORT's providers."""
    import onnxruntime as ort
    import torch  # noqa: F401  (loads the CUDA libraries ORT can share)

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
    """The summary table of ``reports`` alone (summary.py), as gpu-summary.md holds it."""
    from gpu.summary import markdown, summary_rows

    return markdown(gpu, summary_rows(list(reports), reports, {}), [], list(reports))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark TensorRT/CUDA vs PyTorch CUDA on this machine's GPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--deadline", type=float, help="Unix time by which to finish (default: now + 8 minutes)")
    p.add_argument("--work", type=Path, help="build directory (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run what can run; gpu-summary.* is written in every case (rows that did not run say why). ProviderError
    (after writing it) when the GPU or the CUDA provider is missing and so nothing was measured."""
    import run_suite

    args = parse(argv)
    deadline = args.deadline or time.time() + TIME_LIMIT_SECONDS
    models = [m for m in args.models.split(",") if m]
    names = [run_suite.NAMES[m] for m in models]
    try:
        gpu = check_gpu()
        load_gpu_libraries()
        problem = provider_problem("CUDAExecutionProvider")
        if problem:
            raise ProviderError(f"{problem}; the GPU check needs the CUDA provider really running")
    except ProviderError as e:  # nothing can be measured: say so in every row, then fail
        write_summary(args.out, "no usable GPU", names, {}, {}, default_reason=str(e))
        print(f"gpu check: {args.out / 'gpu-summary.md'} lists every row as not measured", file=sys.stderr)
        raise
    providers, notes = usable_providers()
    for note in notes:
        print(f"gpu check: {note}", flush=True)
    reports: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    mixed: dict[str, list[dict[str, Any]]] = {}
    arm_deadline(deadline - 20.0)  # keep 20 s to write files
    with tempfile.TemporaryDirectory(prefix="onnxformer-gpu-") as tmp:
        work = args.work or Path(tmp)
        try:
            for i, (model, name) in enumerate(zip(models, names)):
                reasons[name] = "time limit reached before this model"
                try:
                    reports[name] = bench_model(model, name, work, providers, deadline, len(models) - i, args.out)
                except Exception as e:  # one model's failure (export, quantize) must not lose the others' rows
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    reasons[name] = f"build failed: {type(e).__name__}: {first}"
                    print(f"[{model}] {reasons[name]}", file=sys.stderr)
                    continue
                if reports[name]["interrupted"]:
                    break
                if model == MIXED_MODEL and deadline - time.time() > 90:
                    mixed[name] = mixed_run(work / name, work, providers, deadline - 30)
        except KeyboardInterrupt:
            print("time limit reached; writing what was measured", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    paths = write_summary(args.out, gpu, names, reports, reasons, notes, mixed=mixed)
    print(paths["markdown"].read_text())
    return 0


def usable_providers() -> tuple[list[str], list[str]]:
    """(GPU providers that really start, notes on those that do not): CUDA is known to start; TensorRT needs
    libnvinfer and a provider that starts on a tiny graph."""
    major, why = tensorrt_library()
    if why is None:
        why = provider_problem("TensorrtExecutionProvider")
    if why:
        return ["cuda"], [f"TensorRT rows not measured: {why}"]
    return ["tensorrt", "cuda"], [f"TensorRT {major} found: strongly typed engines"
                                  + (" (fp16/int8 builder flags also set, TensorRT 10)" if major == 10 else "")]


def mixed_run(artifact: Path, work: Path, providers: list[str], deadline: float) -> list[dict[str, Any]]:
    """The mixed-length throughput rows (throughput.py) for ``artifact``: PyTorch fp16 + SDPA vs our CUDA fp16,
    padded and packed."""
    from gpu.throughput import mixed_texts, run_mixed
    from onnxformer.artifact.manifest import Manifest
    from onnxformer.benchmarks.peers import PYTORCH, peer_candidates
    from onnxformer.benchmarks.runners import ArtifactContext, variant_candidates

    ctx = ArtifactContext(artifact, Manifest.load(artifact), 1, 32)
    candidates = peer_candidates(ctx, work, {PYTORCH: ["cuda"]}) + variant_candidates(ctx, None, providers)
    rows = run_mixed(candidates, mixed_texts(), deadline)
    for row in rows:
        print(f"  mixed-length {row['config']}: " + (f"{row['texts_per_s']:.1f} texts/s" if row["measured"]
                                                     else f"not measured: {row['reason']}"), flush=True)
    return rows


def bench_model(model: str, name: str, work: Path, providers: list[str], deadline: float, models_left: int,
                out: Path) -> dict[str, Any]:
    """Export, quantize for the GPU, benchmark; writes gpu-<name>.json/.md/.png and returns the report."""
    import run_suite

    from onnxformer.benchmarks.harness import run_benchmark
    from onnxformer.benchmarks.report import write_report

    artifact = work / name
    run_suite.export(run_suite.checkpoint(model, work), artifact, name)
    print(f"[{model}] {run_suite.quantize(artifact, 'gpu')}", flush=True)
    shapes = len(gpu_settings().batches) * len(gpu_settings().seqs)
    settings = gpu_settings(seconds_per_config(deadline - time.time(), configs=len(planned_configs()), shapes=shapes,
                                               models=models_left))
    settings.providers = providers
    report = run_benchmark(artifact, settings, lambda d, t, what: print(f"  {d}/{t} {what}", flush=True))
    write_report(report, out / f"gpu-{name}.json")
    return report


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OnnxformerError as e:
        print(f"gpu check: error: {e}", file=sys.stderr)
        sys.exit(1)
