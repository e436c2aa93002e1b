"""The bench stage of `onnxformer build`: a short run (batch 1, 16 and 128 tokens) next to the artifact."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

BUILD_BATCHES = [1]
BUILD_SEQS = [16, 128]
BUILD_SECONDS = 0.5  # per configuration and mode: keeps `make demo` around a minute or two


def bench_stage(args: argparse.Namespace, out: Path, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    import time

    from onnxformer.artifact.manifest import Manifest
    from onnxformer.benchmarks.harness import run_benchmark
    from onnxformer.benchmarks.measure import BENCHED, Settings
    from onnxformer.benchmarks.report import write_report
    from onnxformer.benchmarks.stats import Budget
    from onnxformer.runtime.session import physical_cores

    start = time.perf_counter()
    task = Manifest.load(out).task
    if task not in BENCHED:
        return [{"stage": "bench", "variant": "-", "detail": f"skipped: {task} is not benchmarked yet", "seconds": 0.0}]
    # CPU only and no optimum peer here: the full comparison is `onnxformer bench`, this is a quick check.
    settings = Settings(batches=BUILD_BATCHES, seqs=BUILD_SEQS, threads=physical_cores(), providers=["cpu"],
                        budget=Budget(warmup=2, iters=None, seconds=BUILD_SECONDS), peers=())
    report = run_benchmark(out, settings, lambda done, total, what: progress(f"{done}/{total} {what}"))
    write_report(report, out / "bench.json")
    seconds = time.perf_counter() - start
    return rows(report, seconds)


def rows(report: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """One summary row per configuration at the longest benchmarked sequence (batch 1); the stage's wall time
    on its last row only (the others have no time of their own: ``seconds`` None)."""
    from onnxformer.benchmarks.summary import unreliable_note

    seq = max(r["seq"] for r in report["results"]) if report["results"] else None
    out = []
    for r in report["results"]:
        if r["seq"] != seq or r["batch"] != 1:
            continue
        speed = ("" if r["speedup_model_only"] is None or not r.get("speedup_reliable", True)
                 else f", {r['speedup_model_only']:.2f}× PyTorch fp32")
        cos = "" if r["fidelity_cosine"] is None else f", cosine {r['fidelity_cosine']:.4f}"
        out.append({"stage": "bench", "variant": r["config"],
                    "detail": f"1×{seq}: p50 {r['model_only']['p50_ms']:.2f} ms{speed}{cos}", "seconds": None})
    for c in report["configs"]:
        if c["status"] != "ok":
            out.append({"stage": "bench", "variant": c["name"], "detail": f"{c['status']}: {c['reason']}", "seconds": None})
    for note in (unreliable_note(report), report.get("plots_skipped")):
        if note:
            out.append({"stage": "bench", "variant": "-", "detail": note, "seconds": None})
    if out:
        out[-1]["seconds"] = seconds  # the stage's wall time, once (bench.md holds the details)
    return out
