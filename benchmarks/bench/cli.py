"""`onnxformer bench DIR`: parser and handler. Heavy imports happen inside the handler only."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency, throughput, memory and fidelity of an artifact vs PyTorch")
    p.add_argument("directory", help="artifact directory (from `onnxformer export`/`build`)")
    p.add_argument("--providers", type=name_list, help="cpu,cuda,tensorrt (default: every available one)")
    p.add_argument("--variants", type=name_list, help="variants to run (default: every variant in the manifest)")
    p.add_argument("--batch", type=int_list, default=[1, 8], help="batch sizes (default 1,8)")
    p.add_argument("--seq", type=int_list, default=[16, 128], help="sequence lengths in tokens (default 16,128)")
    p.add_argument("--threads", type=int, help="intra-op threads for ONNX Runtime and PyTorch (default: physical cores)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per configuration and mode (default 3)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, help="timed calls per configuration and mode")
    budget.add_argument("--seconds", type=float, help="time budget per configuration and mode (default 2)")
    p.add_argument("--no-baselines", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--peers", type=name_list, default=[],
                   help="other stacks to compare, comma list: optimum (optimum fp32/int8, sentence-transformers' ONNX "
                        "int8), openvino (OpenVINO fp32/NNCF int8), a single peer such as optimum-int8, or all. Each "
                        "stack runs in its own virtual environment, built on first use under "
                        "~/.cache/onnxformer/peer-envs (optimum about 1.5 GB, openvino about 0.5 GB; minutes) "
                        "(default: none)")
    p.add_argument("--in-process", action="store_true",
                   help="run every configuration in this process, interleaved (faster; default: one process each)")
    p.add_argument("--out", help="report JSON path (default DIR/bench.json; .md and .png files go next to it)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    import math

    from onnxformer.benchmarks.harness import Settings
    from onnxformer.benchmarks.peers import select_peers
    from onnxformer.benchmarks.stats import Budget
    from onnxformer.errors import OnnxformerError
    from onnxformer.runtime.session import physical_cores

    for flag, value in (("--threads", args.threads), ("--iters", args.iters), ("--seconds", args.seconds)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise OnnxformerError(f"{flag} must be a finite number > 0, got {value}")
    if args.warmup < 0:
        raise OnnxformerError(f"--warmup must be >= 0, got {args.warmup}")
    if any(n <= 0 for n in [*args.batch, *args.seq]):
        raise OnnxformerError(f"--batch and --seq take sizes > 0, got {args.batch} and {args.seq}")
    seconds = args.seconds if args.seconds is not None else (None if args.iters else 2.0)
    return Settings(batches=args.batch, seqs=args.seq, threads=args.threads or physical_cores(),
                    budget=Budget(warmup=args.warmup, iters=args.iters, seconds=seconds), providers=args.providers,
                    variants=args.variants, baselines=not args.no_baselines, peers=select_peers(args.peers),
                    isolate=not args.in_process)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxformer.benchmarks.harness import run_benchmark
    from onnxformer.benchmarks.measure import preflight
    from onnxformer.benchmarks.peers import peer_costs
    from onnxformer.benchmarks.report import write_report
    from onnxformer.progress import console

    settings = settings_from_args(args)
    preflight(args.directory, settings)  # user errors surface as one line, before the progress display starts
    out = Path(args.out) if args.out else Path(args.directory) / "bench.json"
    check_writable(out)  # before minutes of measuring, not after
    for line in peer_costs(settings.peers):  # what the chosen peers cost, before anything is built
        console.print(escape(line))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("bench", total=None)
        report = run_benchmark(args.directory, settings,
                               lambda done, total, what: bar.update(task, completed=done, total=total, description=what))
    paths = write_report(report, out)
    print_summary(report)
    console.print(f"wrote {', '.join(str(p) for p in paths.values() if p.exists())}")
    if report["plots_skipped"]:
        console.print(f"[yellow]{escape(report['plots_skipped'])}[/]")
    if report["interrupted"]:
        console.print("[yellow]interrupted: the files hold what was measured so far[/]")
        return 130
    return 0


def check_writable(out: Path) -> None:
    """Fail now, in one line, when the report cannot be written where it is meant to go (the probe every
    writer uses: runtime/scratch.prepare_parent)."""
    from onnxformer.artifact.scratch import prepare_parent
    from onnxformer.errors import ArtifactError

    try:
        prepare_parent(out)
    except ArtifactError as e:
        raise ArtifactError(f"cannot write the report to {out.parent} ({e}); pass --out PATH to write it "
                            "somewhere writable") from None


def print_summary(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from onnxformer.benchmarks.summary import unreliable_note
    from onnxformer.progress import console

    table = Table(title=f"bench: {report['artifact']['name']}")
    for col in ("config", "batch×seq", "model p50 ms", "e2e p50 ms", "cosine", "speedup"):
        table.add_column(col, justify="left" if col == "config" else "right", no_wrap=col == "config",
                         min_width=10 if col == "speedup" else None)  # room for "unreliable"
    for r in report["results"]:
        cos = "n/a" if r["fidelity_cosine"] is None else f"{r['fidelity_cosine']:.5f}"
        speed = ("n/a" if r["speedup_model_only"] is None else
                 f"{r['speedup_model_only']:.2f}×" if r.get("speedup_reliable", True) else "unreliable")
        table.add_row(r["config"], f"{r['batch']}×{r['seq']}", f"{r['model_only']['p50_ms']:.2f}",
                      f"{r['end_to_end']['p50_ms']:.2f}", cos, speed)
    console.print(table)
    for c in report["configs"]:
        if c["status"] != "ok":
            console.print(f"[yellow]{escape(c['name'])}: {c['status']}: {escape(str(c['reason']))}[/]")
    if note := unreliable_note(report):
        console.print(f"[yellow]{escape(note)}[/]")
