"""The GPU check's summary: gpu-summary.md / .json / .png. Every planned row (model × configuration × shape)
appears, measured or "not measured: <why>", so a run cut short, a missing TensorRT or a machine without a GPU
still yields a complete, honest table. Plain data in (the per-model bench reports), files out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxformer.artifact.files import atomic_write_bytes, atomic_write_json
from onnxformer.benchmarks.peers import PEERS, PYTORCH

SCHEMA = "onnxformer-gpu-summary/1"
SHAPES: tuple[tuple[int, int], ...] = ((1, 128), (8, 128), (32, 128))
# The strongest PyTorch peer the targets are set against (issue 18): fp16 + SDPA.
REFERENCE = "pytorch-fp16-sdpa@cuda"
# Our configurations on the GPU (labels as benchmarks/bench/runners.py makes them), in table order.
VARIANTS: tuple[str, ...] = ("fp32-opt@cuda", "fp16@cuda", "fp16@cuda-graph", "fp16@cuda-packed",
                             "fp16-trt@tensorrt-fp16", "int8-trt@tensorrt-int8")
# Planned rows the runner does not produce yet: they are reported, never silently dropped.
NOT_BUILT = {
    "fp16@cuda-graph": "CUDA graphs need one capture per shape (RunOptions gpu_graph_id) over buffers that never "
                       "move; the runner's I/O binding regrows its buffers across shapes: not wired yet",
}
MIXED_ROW = "mixed-length 1,000 texts"


def planned_configs() -> list[str]:
    """Every PyTorch peer that runs on CUDA (peers.py), then our variants."""
    peers = [f"{p.name}@cuda" for p in PEERS if p.kind == PYTORCH and "cuda" in p.devices]
    return peers + list(VARIANTS)


def _measured(report: Mapping[str, Any], config: str, batch: int, seq: int) -> dict[str, Any] | None:
    return next((r for r in report.get("results", []) if (r["config"], r["batch"], r["seq"]) == (config, batch, seq)),
                None)


def _reason(report: Mapping[str, Any] | None, config: str, why_none: str) -> str:
    """Why ``config`` has no number in ``report``."""
    if report is None:
        return why_none
    found = next((c for c in report.get("configs", []) if c["name"] == config), None)
    if found is not None and found.get("status") != "ok":
        return f"{found.get('status')}: {found.get('reason')}"
    if config in NOT_BUILT:
        return NOT_BUILT[config]
    if report.get("interrupted"):
        return "time limit reached before it ran"
    if found is None:
        return "not part of this run (variant not built or provider not started)"
    return "no result for this shape"


def shapes_of(report: Mapping[str, Any] | None) -> list[tuple[int, int]]:
    """The planned shapes, plus any other the report's run measured."""
    shapes = list(SHAPES)
    if report is not None:
        s = report.get("settings", {})
        shapes += [(b, q) for q in s.get("seqs", []) for b in s.get("batches", []) if (b, q) not in shapes]
    return shapes


def summary_rows(models: Sequence[str], reports: Mapping[str, Mapping[str, Any]], reasons: Mapping[str, str],
                 default_reason: str = "not run", mixed: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
                 ) -> list[dict[str, Any]]:
    """One row per model × configuration × shape, then the model's mixed-length rows (throughput.run_mixed), or
    one row saying why there are none; ``reasons[model]`` says why a model without a report was not measured."""
    mixed = mixed or {}
    rows = []
    for model in models:
        report = reports.get(model)
        why = reasons.get(model, default_reason)
        configs = planned_configs()
        if report is not None:  # anything it ran that the plan does not name (a new peer, say) is listed too
            configs += [c["name"] for c in report.get("configs", []) if c["name"] not in configs and c["device"] == "gpu"]
        for batch, seq in shapes_of(report):
            ref = _measured(report, REFERENCE, batch, seq) if report else None
            for config in configs:
                r = _measured(report, config, batch, seq) if report else None
                row: dict[str, Any] = {"model": model, "config": config, "batch": batch, "seq": seq,
                                       "measured": r is not None}
                if r is None:
                    row["reason"] = _reason(report, config, why)
                else:
                    row.update(p50_ms=r["model_only"]["p50_ms"], p99_ms=r["model_only"]["p99_ms"],
                               fidelity_cosine=r.get("fidelity_cosine"), within_budget=r.get("within_budget"),
                               speedup_vs_pytorch_fp32=r.get("speedup_model_only"),
                               speedup_vs_pytorch_fp16_sdpa=(ref["model_only"]["p50_ms"] / r["model_only"]["p50_ms"]
                                                             if ref else None))
                rows.append(row)
        for m in mixed.get(model, []):
            rows.append({"model": model, "config": m["config"], "batch": None, "seq": None, "mixed": True,
                         "measured": m["measured"], **({"texts_per_s": m["texts_per_s"]} if m["measured"]
                                                        else {"reason": m["reason"]})})
        if model not in mixed:
            rows.append({"model": model, "config": MIXED_ROW, "batch": None, "seq": None, "mixed": True,
                         "measured": False, "reason": why if report is None else
                         "the mixed-length run did not start (time limit, or run for MiniLM only)"})
    return rows


def _f(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(gpu: str, rows: Sequence[Mapping[str, Any]], notes: Sequence[str], linked: Sequence[str] = ()) -> str:
    """The table; ``linked``: models whose own report (gpu-<model>.md) was written."""
    measured = sum(1 for r in rows if r["measured"])
    lines = [f"# GPU check: {gpu}", ""]
    if not measured:
        lines += ["**No GPU number was measured.** Every row below says why.", ""]
    lines += [f"{measured} of {len(rows)} planned rows measured. Model-only latency (ms); speedups are the "
              f"reference's p50 divided by the row's (> 1: this row is faster); {REFERENCE} is the PyTorch "
              "fp16 + SDPA peer the targets are set against; fidelity is the worst-row cosine vs PyTorch fp32.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["| model | configuration | batch × seq | p50 ms | p99 ms | vs PyTorch fp32 | vs PyTorch fp16+SDPA "
              "| fidelity | status |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = "mixed" if r["batch"] is None else f"{r['batch']} × {r['seq']}"
        if r["measured"] and r.get("mixed"):
            cells = ["—"] * 5 + [f"measured: {_f(r['texts_per_s'], 1)} texts/s (1,000 texts, batches of 32)"]
        elif r["measured"]:
            fid = _f(r.get("fidelity_cosine"), 5) + ("" if r.get("within_budget") else " ✗")
            cells = [_f(r["p50_ms"]), _f(r["p99_ms"]), f"{_f(r.get('speedup_vs_pytorch_fp32'))}×",
                     f"{_f(r.get('speedup_vs_pytorch_fp16_sdpa'))}×", fid, "measured"]
        else:
            cells = ["—"] * 5 + [f"not measured: {r['reason']}"]
        lines.append(f"| {r['model']} | {r['config']} | {shape} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- [{name}](gpu-{name}.md)" for name in linked]] if linked else []
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path: Path, gpu: str) -> Path:
    """p50 at batch 1 × 128 per configuration and model; with nothing measured, a figure that says so."""
    import matplotlib.pyplot as plt

    from onnxformer.benchmarks import plots  # noqa: F401  (selects matplotlib's headless backend)
    from onnxformer.benchmarks.plots import _save

    done = [r for r in rows if r["measured"] and (r["batch"], r["seq"]) == SHAPES[0]]
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(4, len(done)) + 1.2))
    if not done:
        reasons = sorted({r["reason"] for r in rows if not r["measured"]})[:3]
        ax.text(0.5, 0.5, "no GPU number measured\n" + "\n".join(reasons), ha="center", va="center", wrap=True,
                fontsize=9)
        ax.set_axis_off()
    else:
        labels = [f"{r['model']} {r['config']}" for r in done]
        ax.barh(labels, [r["p50_ms"] for r in done])
        ax.set(xlabel="model-only p50 latency (ms), batch 1 × 128", title=f"GPU check: {gpu}")
        ax.invert_yaxis()
    return _save(fig, path)


def write_summary(out: Path, gpu: str, models: Sequence[str], reports: Mapping[str, Mapping[str, Any]],
                  reasons: Mapping[str, str], notes: Sequence[str] = (), default_reason: str = "not run",
                  mixed: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> dict[str, Path]:
    """gpu-summary.json / .md / .png in ``out`` (atomic writes)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(models, reports, reasons, default_reason, mixed)
    paths = {"json": out / "gpu-summary.json", "markdown": out / "gpu-summary.md", "png": out / "gpu-summary.png"}
    atomic_write_json(paths["json"], {"schema": SCHEMA, "gpu": gpu, "notes": list(notes), "reference": REFERENCE,
                                      "measured": sum(1 for r in rows if r["measured"]), "rows": rows})
    atomic_write_bytes(paths["markdown"], markdown(gpu, rows, notes, list(reports)).encode())
    plot(rows, paths["png"], gpu)
    return paths
