"""PNG plots with matplotlib's Agg backend (no display needed): latency vs sequence length, speedup bars."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt

from onnxformer.artifact.files import atomic_write_bytes


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_latency(report: dict[str, Any], path: Path) -> Path | None:
    """One panel per batch size: model-only p50 latency vs sequence length, one line per configuration."""
    rows = report["results"]
    if not rows:
        return None
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.2), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for config in dict.fromkeys(r["config"] for r in rows):
            pts = sorted((r["seq"], r["model_only"]["p50_ms"]) for r in rows if r["config"] == config and r["batch"] == batch)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=config)
        ax.set(title=f"batch {batch}", xlabel="sequence length (tokens)", ylabel="model-only p50 latency (ms)", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{report['artifact']['name']}: latency vs sequence length ({report['settings']['threads']} threads)")
    return _save(fig, path)


def plot_speedup(report: dict[str, Any], path: Path) -> Path | None:
    """Speedup vs PyTorch eager fp32 at the headline shape, model-only and end-to-end."""
    h = report.get("headline")
    if not h or h.get("baseline_unreliable"):  # an oversubscribed baseline: no ratios to draw (summary.py)
        return None
    rows = [r for r in report["results"] if (r["batch"], r["seq"]) == (h["batch"], h["seq"])
            and r["speedup_model_only"] is not None]
    if not rows:
        return None
    names = [r["config"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows)), 4.2))
    model = ax.bar([x - 0.2 for x in xs], [r["speedup_model_only"] for r in rows], width=0.4, label="model-only")
    e2e = ax.bar([x + 0.2 for x in xs], [r["speedup_end_to_end"] for r in rows], width=0.4, label="end-to-end")
    for r, bars in zip(rows, zip(model, e2e)):
        if not r["within_budget"]:  # fast but not faithful enough: hatched so it does not read as a win
            for bar in bars:
                bar.set_hatch("//")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), names, rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="speedup vs PyTorch eager fp32 (p50)",
           title=f"{report['artifact']['name']}: batch {h['batch']} × {h['seq']} (hatched: outside fidelity budget)")
    ax.legend()
    return _save(fig, path)
