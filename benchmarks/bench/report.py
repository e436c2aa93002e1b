"""Writing a benchmark report: raw JSON (numbers stay floats), a Markdown table, and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxformer.artifact.files import atomic_write_bytes, atomic_write_json
from onnxformer.benchmarks.stats import BLOCK


def output_paths(json_path: Path) -> dict[str, Path]:
    """Every file of one report, next to its JSON: bench.json → bench.md, bench-latency.png, bench-speedup.png."""
    stem = json_path.with_suffix("")
    return {"json": json_path, "markdown": stem.with_suffix(".md"),
            "latency_png": stem.parent / f"{stem.name}-latency.png", "speedup_png": stem.parent / f"{stem.name}-speedup.png"}


def write_report(report: dict[str, Any], json_path: str | Path) -> dict[str, Path]:
    """The numbers first (JSON, then Markdown); the plots last and optional: without matplotlib they are skipped
    and ``report["plots_skipped"]`` says why (the Markdown too; the caller tells the user)."""
    paths = output_paths(Path(json_path))
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    report["plots_skipped"] = plots_missing()
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["markdown"], markdown(report).encode())
    if report["plots_skipped"] is None:
        from onnxformer.benchmarks.plots import plot_latency, plot_speedup

        images = {"latency": plot_latency(report, paths["latency_png"]),
                  "speedup": plot_speedup(report, paths["speedup_png"])}
        atomic_write_bytes(paths["markdown"], markdown(report, {k: p.name for k, p in images.items() if p}).encode())
    return paths


def plots_missing() -> str | None:
    """Why the PNG plots cannot be drawn here (matplotlib comes with an extra), or None when they can."""
    from onnxformer.extras import install_hint

    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as e:
        name = (e.name or "matplotlib").split(".")[0]
        return f"plots skipped: {name} is not installed ({install_hint(name) or f'pip install {name}'})"
    return None


def write_json_and_markdown(report: dict[str, Any], out: str | Path, text: str) -> str:
    """``out``.json (the numbers, floats) and ``out``.md (``text``), both written atomically; returns ``text``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), report)
    atomic_write_bytes(out.with_suffix(".md"), text.encode())
    return text


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(report: dict[str, Any], images: dict[str, str] | None = None) -> str:
    art, s = report["artifact"], report["settings"]
    budget = f"{s['iters']} iterations" if s["iters"] else f"{s['seconds']} s"
    lines = [f"# Benchmark: {art['name']} ({art['task']})", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted (Ctrl-C): partial results.**", ""]
    lines += [f"{s['threads']} threads (PyTorch intra-op = ONNX Runtime intra-op), {s['warmup']} warm-up calls, "
              f"{budget} per configuration and mode; providers: {', '.join(s['providers'])}. "
              f"Created {report['created']}.", ""]
    cores = report["environment"]["cpu"]["usable_cores"] or 1
    load = max(report.get("load_average_1m_start") or 0.0, report.get("load_average_1m_end") or 0.0)
    if load > 0.5 * cores:
        lines += [f"**Shared machine:** 1-minute load average {_f(report.get('load_average_1m_start'))} at start, "
                  f"{_f(report.get('load_average_1m_end'))} at end, on {cores} cores: other jobs competed for the CPU. "
                  "Absolute latencies are inflated, and multi-threaded PyTorch (OpenMP) suffers far more from it "
                  "than ONNX Runtime, which inflates speedups over PyTorch; the fastest-call ratios are the least "
                  "disturbed estimate.", ""]
    lines += _headline(report.get("headline")) + _headline(report.get("headline_gpu"))
    lines += _table(report)
    lines += _unavailable(report)
    for title, name in (images or {}).items():
        lines += [f"![{title}]({name})", ""]
    if report.get("plots_skipped"):
        lines += [f"No plots: {report['plots_skipped'].removeprefix('plots skipped: ')}.", ""]
    lines += _environment(report)
    return "\n".join(lines) + "\n"


def _headline(h: dict[str, Any] | None) -> list[str]:
    if not h:
        return []
    if h.get("baseline_unreliable"):
        vs_torch = (f"- PyTorch eager fp32: {_f(h['pytorch_fp32_p50_ms'])} ms → speedup **unreliable**: the "
                    f"multi-threaded baseline was oversubscribed ({h['baseline_unreliable']})")
    else:
        vs_torch = (f"- PyTorch eager fp32: {_f(h['pytorch_fp32_p50_ms'])} ms → speedup "
                    f"**{_f(h['speedup_vs_pytorch_fp32'])}×** (end-to-end {_f(h['speedup_end_to_end_vs_pytorch_fp32'])}×)")
    return [
        f"## Headline ({h['device'].upper()}, batch {h['batch']} × {h['seq']} tokens, model-only p50)", "",
        f"- best variant within its fidelity budget: **{h['best_variant'] or 'none'}** "
        f"({_f(h['best_p50_ms'])} ms, cosine {_f(h['best_fidelity_cosine'], 5)})",
        vs_torch,
        f"- vs PyTorch {'bf16' if h['device'] == 'cpu' else 'fp16'} autocast: "
        f"{_f(h['speedup_vs_pytorch_bf16' if h['device'] == 'cpu' else 'speedup_vs_pytorch_fp16'])}×; vs optimum int8: "
        f"{_f(h['speedup_vs_optimum_int8'])}×; vs optimum fp32: {_f(h['speedup_vs_optimum_fp32'])}×",
        f"- same ratios on the fastest call (least disturbed by other load): vs PyTorch fp32 "
        f"{_f(h['speedup_vs_pytorch_fp32_min'])}×, vs optimum int8 {_f(h['speedup_vs_optimum_int8_min'])}×", "",
    ]


def _table(report: dict[str, Any]) -> list[str]:
    head: tuple[str, ...] = ("config", "batch", "seq", "model p50 ms", "p90", "p99", "mean", "e2e p50 ms", "e2e p99", "seq/s",
            "tokens/s", "RSS over base MB", "call peak MB", "size MB", "cosine vs fp32", "speedup model", "speedup e2e")
    gpu = any(r.get("gpu_memory_mb") is not None for r in report["results"])
    head += ("GPU MB",) if gpu else ()
    lines = ["## Results", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        m, e = r["model_only"], r["end_to_end"]
        cos = "n/a" if r["fidelity_cosine"] is None else f"{r['fidelity_cosine']:.5f}" + ("" if r["within_budget"] else " ✗")
        cells = (r["config"], str(r["batch"]), str(r["seq"]), _f(m["p50_ms"]), _f(m["p90_ms"]), _f(m["p99_ms"]),
                 _f(m["mean_ms"]), _f(e["p50_ms"]), _f(e["p99_ms"]), _f(m["seq_per_s"], 1), _f(m["tokens_per_s"], 0),
                 _f(r["peak_rss_over_base_mb"], 0), _f(r["run_peak_over_steady_mb"], 0), _f(r["size_mb"], 1), cos,
                 *_speedups(r)) + ((_f(r["gpu_memory_mb"], 0),) if gpu else ())
        lines.append("| " + " | ".join(cells) + " |")
    if gpu:
        lines += ["", "GPU memory: PyTorch's CUDA allocator peak for PyTorch configurations; for ONNX Runtime, the "
                  "whole process's GPU memory from nvidia-smi (ONNX Runtime exposes no per-session peak)."]
    lines += ["", f"Fidelity: worst-row cosine against {report.get('fidelity_reference')} on the same inputs "
              "(pooled embeddings for feature extraction, logits otherwise); ✗ = outside the precision's budget. "
              f"Memory: {report['memory_method']}. "
              + ("Timing: each configuration in its own process, one after the other." if report["settings"].get("isolate")
                 else "Timing: all configurations in one process, timed in interleaved rounds (each round: one untimed "
                 f"call, then {BLOCK} timed calls per configuration), so background load hits all alike."), ""]
    return lines


def _speedups(row: dict[str, Any]) -> tuple[str, str]:
    if not row.get("speedup_reliable", True):
        return "unreliable", "unreliable"
    return _f(row["speedup_model_only"]), _f(row["speedup_end_to_end"])


def _unavailable(report: dict[str, Any]) -> list[str]:
    missing = [c for c in report["configs"] if c["status"] != "ok"]
    skipped = report.get("skipped_shapes", [])
    if not missing and not skipped:
        return []
    lines = ["## Not measured", ""]
    lines += [f"- {c['name']}: {c['status']} — {c['reason']}" for c in missing]
    lines += [f"- seq {s['seq']}: {s['reason']}" for s in skipped]
    return lines + [""]


def _environment(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    cpu = env["cpu"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    gpus = "; ".join(", ".join(f"{k}: {v}" for k, v in g.items()) for g in env["gpus"]) or "none"
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    return ["## Environment", "",
            f"- CPU: {cpu['model']}; {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores "
            f"({cpu['usable_cores']} usable); 1-min load average at start {_f(cpu['load_average_1m'])}",
            f"- CPU flags: {flags}", f"- GPU: {gpus}", f"- OS: {env['os']}; Python {env['python']}",
            f"- libraries: {libs}", f"- ONNX Runtime providers: {', '.join(env['onnxruntime_providers'])}", ""]
