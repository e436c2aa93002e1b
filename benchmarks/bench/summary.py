"""Comparisons derived from raw results: speedups, fidelity budgets, and the headline numbers.

Speedup = PyTorch eager fp32 p50 / this configuration's p50, same device, same (batch, seq).
"""
from __future__ import annotations

from typing import Any

from onnxformer.benchmarks.runners import VARIANT

# Minimum worst-row cosine against PyTorch fp32 for a configuration to count as "within budget".
FIDELITY_BUDGETS = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.999, "int8": 0.99, "int4": 0.98}
HEADLINE_SHAPE = (1, 128)


def budget_for(precision: str) -> float:
    for prefix, budget in FIDELITY_BUDGETS.items():
        if precision.startswith(prefix):
            return budget
    return FIDELITY_BUDGETS["int8"]


def add_comparisons(report: dict[str, Any]) -> None:
    configs = {c["name"]: c for c in report["configs"]}
    index = {(r["config"], r["batch"], r["seq"]): r for r in report["results"]}
    report["baseline_unreliable"] = oversubscribed(report)
    for row in report["results"]:
        config = configs[row["config"]]
        base = index.get((f"pytorch-fp32@{'cpu' if config['device'] == 'cpu' else 'cuda'}", row["batch"], row["seq"]))
        for mode in ("model_only", "end_to_end"):
            row[f"speedup_{mode}"] = base[mode]["p50_ms"] / row[mode]["p50_ms"] if base else None
        # the raw ratio stays in the JSON; what prints it says "unreliable" instead
        row["speedup_reliable"] = config["device"] != "cpu" or report["baseline_unreliable"] is None
        budget = budget_for(config["precision"])
        row["fidelity_budget"] = budget
        row["within_budget"] = row["fidelity_cosine"] is not None and row["fidelity_cosine"] >= budget
    report["headline"] = headline(report, "cpu")
    report["headline_gpu"] = headline(report, "gpu")
    if report["headline"] is not None:
        report["headline"]["baseline_unreliable"] = report["baseline_unreliable"]


def oversubscribed(report: dict[str, Any]) -> str | None:
    """Why speedups over the CPU PyTorch baselines cannot be trusted, or None. Multi-threaded PyTorch (OpenMP)
    collapses when other load takes its cores (each step waits for its slowest, descheduled worker; 2 threads
    measured at 228 ms against 1.1 ms with one), far more than ONNX Runtime does, so the ratio balloons. Either
    sign counts: the machine was already busier than its cores before the run, or a baseline ran faster on one
    thread (measure.one_thread_p50) than on the threads it was given."""
    threads = report.get("settings", {}).get("threads", 1)
    if threads <= 1:
        return None
    reasons = []
    cores = report.get("environment", {}).get("cpu", {}).get("usable_cores") or 1
    load = report.get("load_average_1m_start")
    if load is not None and load > cores:
        reasons.append(f"1-minute load average {load:.1f} on {cores} cores before the run")
    for r in report["results"]:
        one = r.get("one_thread_p50_ms")
        if one is not None and one < r["model_only"]["p50_ms"]:
            reasons.append(f"{r['config']} at {r['batch']}×{r['seq']}: {one:.2f} ms on 1 thread, "
                           f"{r['model_only']['p50_ms']:.2f} ms on {threads}")
    if len(reasons) > 3:
        reasons[2:] = [f"{len(reasons) - 2} more"]
    return "; ".join(reasons) or None


def unreliable_note(report: dict[str, Any]) -> str | None:
    """The one line every summary prints instead of speedups over an oversubscribed PyTorch baseline."""
    reason = report.get("baseline_unreliable")
    if not reason:
        return None
    return (f"speedups over PyTorch unreliable, not shown: its {report['settings']['threads']}-thread baseline was "
            f"oversubscribed ({reason}); rerun on an idle machine, or with --threads 1")


def headline(report: dict[str, Any], device: str = "cpu", shape: tuple[int, int] = HEADLINE_SHAPE) -> dict[str, Any] | None:
    """Batch 1 × 128 (or the first measured shape) on ``device``: best ONNX variant within budget vs the references."""
    on_device = {c["name"]: c for c in report["configs"] if c["device"] == device}
    rows = [r for r in report["results"] if r["config"] in on_device]
    shapes = [(r["batch"], r["seq"]) for r in rows]
    if not shapes:
        return None
    batch, seq = shape if shape in shapes else shapes[0]
    at = {r["config"]: r for r in rows if (r["batch"], r["seq"]) == (batch, seq)}
    # Ours by the recorded kind, never by name: a peer may be called anything ("openvino-int8", ...).
    variants = [r for name, r in at.items() if on_device[name]["kind"] == VARIANT and r["within_budget"]]
    best = min(variants, key=lambda r: r["model_only"]["p50_ms"], default=None)

    torch_device = "cpu" if device == "cpu" else "cuda"

    def p50(name: str) -> float | None:
        return at[name]["model_only"]["p50_ms"] if name in at else None

    def ratio(name: str, stat: str = "p50_ms") -> float | None:
        if best is None or name not in at:
            return None
        return at[name]["model_only"][stat] / best["model_only"][stat]

    # Fastest-call ratios too: on a shared machine the minimum is the least disturbed estimate.
    by_min = {f"{key}_min": ratio(name, "min_ms") for key, name in (
        ("speedup_vs_pytorch_fp32", f"pytorch-fp32@{torch_device}"), ("speedup_vs_pytorch_bf16", "pytorch-bf16@cpu"),
        ("speedup_vs_pytorch_fp16", "pytorch-fp16@cuda"), ("speedup_vs_optimum_int8", "optimum-int8@cpu"))}

    return {
        "batch": batch,
        "seq": seq,
        "device": device,
        "best_variant": best["config"] if best else None,
        "best_p50_ms": best["model_only"]["p50_ms"] if best else None,
        "best_fidelity_cosine": best["fidelity_cosine"] if best else None,
        "pytorch_fp32_p50_ms": p50(f"pytorch-fp32@{torch_device}"),
        "speedup_vs_pytorch_fp32": ratio(f"pytorch-fp32@{torch_device}"),
        "speedup_vs_pytorch_bf16": ratio("pytorch-bf16@cpu"),
        "speedup_vs_pytorch_fp16": ratio("pytorch-fp16@cuda"),
        "speedup_vs_optimum_int8": ratio("optimum-int8@cpu"),
        "speedup_vs_optimum_fp32": ratio("optimum-fp32@cpu"),
        "speedup_end_to_end_vs_pytorch_fp32": best["speedup_end_to_end"] if best else None,
        **by_min,
    }
