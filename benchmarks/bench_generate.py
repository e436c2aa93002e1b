"""Generation speed: time to first token and tokens/s, ONNX Runtime (every variant) vs PyTorch generate.

    .venv/bin/python benchmarks/bench_generate.py     # writes benchmarks/results/generate.{json,md}

A GPT-2-sized decoder (12 layers, 768 hidden, 12 heads, 50257 vocab) with random weights, on CPU,
batch 1, a 128-token prompt, 64 new tokens, greedy on both sides. End-of-sequence is disabled in the
checkpoint so every run generates exactly 64 tokens. Both sides include tokenization; PyTorch and
ONNX Runtime get the same thread budget; runs are interleaved (PyTorch, then each variant, repeated)
so background load hits every engine alike; medians are reported. Bar: fp32 ONNX end-to-end
tokens/s ≥ 1.5 × PyTorch's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
BAR = 1.5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="build/bench-generate", help="checkpoint + artifact directory (reused)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", default="1,physical",
                   help="comma list of thread budgets, each used by both engines ('physical' = physical cores)")
    p.add_argument("--variants", default="fp32,fp16,int8,int4")
    p.add_argument("--out", default=str(RESULTS / "generate"), help="results path without extension")
    return p.parse_args()


def prepare(args: argparse.Namespace, variants: list[str]) -> tuple[Path, Path]:
    """Random GPT-2-sized checkpoint → exported, validated artifact → quantized variants (cached in --work)."""
    from onnxformer.artifact.manifest import is_artifact, load_manifest
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint
    from onnxformer.quantize.generative import quantize_generative

    work = Path(args.work)
    tag = f"gpt2-l{args.layers}-h{args.hidden}-v{args.vocab}"
    ckpt, art = work / f"ckpt-{tag}", work / f"artifact-{tag}"
    if not (ckpt / "config.json").is_file():
        print(f"building random checkpoint {ckpt}")
        make_generative_checkpoint(ckpt, "gpt2", layers=args.layers, hidden=args.hidden, heads=args.heads,
                                   positions=1024, vocab_size=args.vocab, initializer_range=0.02, eos_token_id=None)
    if not is_artifact(art):
        print("exporting (optimum, with past) and validating against PyTorch")
        export_checkpoint(str(ckpt), art, overwrite=True)
    missing = [v for v in variants if v != "fp32" and v not in load_manifest(art).variants]
    if missing:
        print(f"quantizing: {', '.join(missing)}")
        quantize_generative(art, missing, progress=print)
    return ckpt, art


def exact_prompt(tokenizer: Any, n: int) -> str:
    """A text that encodes to exactly ``n`` tokens (byte-level BPE can re-merge at a cut, so search)."""
    from onnxformer.export.generative_random import CORPUS

    ids = tokenizer.encode(" ".join(CORPUS * (1 + 4 * n // len(" ".join(CORPUS))))).ids
    for cut in range(n - 8, n + 16):
        text = tokenizer.decode(ids[:cut])
        if len(tokenizer.encode(text).ids) == n:
            return text
    raise RuntimeError(f"no text of exactly {n} tokens found")


def pytorch_engine(ckpt: Path, prompt: str, threads: int) -> Callable[[int], list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()

    def run(new: int) -> list[int]:
        torch.set_num_threads(threads)  # process-global: set per call, budgets are interleaved
        enc = tok([prompt], return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
        return out[0, enc.input_ids.shape[1]:].tolist()

    return run


def onnx_engine(art: Path, variant: str, prompt: str, threads: int) -> Callable[[int], list[int]]:
    from onnxformer.runtime.generation import Generator

    gen = Generator.load(art, variant=variant, threads=threads)
    return lambda new: gen.generate_ids([prompt], max_new_tokens=new)[0]


def measure(engines: dict[str, Callable[[int], list[int]]], new: int, runs: int) -> dict[str, dict[str, Any]]:
    from onnxformer.artifact.timing import timed

    samples: dict[str, dict[str, list[float]]] = {n: {"ttft": [], "total": []} for n in engines}
    tokens: dict[str, list[int]] = {}
    for _name, run in engines.items():  # warm-up: first-call allocations and kernel selection
        run(2)
    for _ in range(runs):
        for name, run in engines.items():
            samples[name]["ttft"].append(timed(lambda: run(1))[0])
            seconds, tokens[name] = timed(lambda: run(new))
            if len(tokens[name]) != new:
                raise RuntimeError(f"{name} generated {len(tokens[name])} tokens, expected {new}")
            samples[name]["total"].append(seconds)
    results = {}
    for name, s in samples.items():
        ttft, total = statistics.median(s["ttft"]), statistics.median(s["total"])
        results[name] = {"ttft_s": ttft, "total_s": total, "tokens_per_s": new / total,
                         "decode_tokens_per_s": (new - 1) / max(total - ttft, 1e-9),
                         "runs_total_s": s["total"], "runs_ttft_s": s["ttft"], "tokens": tokens[name]}
    return results


def summarize(results: dict[str, dict[str, Any]], fidelity: dict[str, Any]) -> None:
    base = results["pytorch"]
    ref_tokens = base["tokens"]
    for name, r in results.items():
        r["speedup_tokens_per_s"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["speedup_ttft"] = base["ttft_s"] / r["ttft_s"]
        r["greedy_tokens_equal_to_pytorch"] = sum(a == b for a, b in zip(r["tokens"], ref_tokens))
        if name in fidelity:
            r["fidelity"] = fidelity[name]


def markdown(report: dict[str, Any]) -> str:
    cfg, env = report["config"], report["environment"]
    lines = [
        "# Generation benchmark",
        "",
        f"GPT-2-sized decoder (random weights): {cfg['layers']} layers, {cfg['hidden']} hidden, vocab {cfg['vocab']}; "
        f"batch 1, {cfg['prompt_tokens']}-token prompt, {cfg['new_tokens']} new tokens, greedy; the same thread budget "
        f"for both engines; median of {cfg['runs']} interleaved runs. CPU: {env['cpu']} ({env['cores']} logical cores); "
        f"load average before/after: {env['loadavg_before']} / {env['loadavg_after']}.",
    ]
    for threads, results in report["results"].items():
        lines += ["", f"## {threads} thread(s)", "",
                  "| engine | TTFT (ms) | tokens/s (end to end) | decode tokens/s | × PyTorch tokens/s | "
                  "greedy tokens = PyTorch | next-token agreement vs fp32 | perplexity Δ |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in results.items():
            fid = r.get("fidelity", {})
            agree = f"{fid['next_token_agreement']:.3f}" if fid else "—"
            delta = f"{fid['perplexity_delta']:+.4f}" if fid else "—"
            lines.append(f"| {name} | {1000 * r['ttft_s']:.0f} | {r['tokens_per_s']:.1f} | "
                         f"{r['decode_tokens_per_s']:.1f} | {r['speedup_tokens_per_s']:.2f} | "
                         f"{r['greedy_tokens_equal_to_pytorch']}/{cfg['new_tokens']} | {agree} | {delta} |")
    bar = report["bar"]
    measured = ", ".join(f"{t} thread(s): {x:.2f}×" for t, x in bar["measured"].items())
    lines += ["", f"Bar: onnx-fp32 tokens/s ≥ {bar['required']}× PyTorch at every thread budget → {measured} — "
                  f"**{'met' if bar['met'] else 'NOT met'}**.",
              "", "Fidelity columns are measured teacher-forced on the evaluation texts (quantize/generative.py); "
                  "'greedy tokens = PyTorch' counts positions where the 64 generated tokens agree."]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.benchmarks.environment import cpu_info
    from onnxformer.runtime.session import physical_cores

    budgets = [physical_cores() if t.strip() == "physical" else int(t) for t in args.threads.split(",")]
    budgets = sorted(set(budgets))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    ckpt, art = prepare(args, variants)
    from tokenizers import Tokenizer

    prompt = exact_prompt(Tokenizer.from_file(str(art / "tokenizer.json")), args.prompt_tokens)
    manifest = load_manifest(art)
    fidelity = {f"onnx-{v}": manifest.variant(v).fidelity for v in variants if v != "fp32"}
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for threads in budgets:
        print(f"measuring with {threads} thread(s)")
        engines = {"pytorch": pytorch_engine(ckpt, prompt, threads)}
        engines.update({f"onnx-{v}": onnx_engine(art, v, prompt, threads) for v in variants})
        results[str(threads)] = measure(engines, args.new_tokens, args.runs)
        summarize(results[str(threads)], fidelity)
    measured = {t: r["onnx-fp32"]["speedup_tokens_per_s"] for t, r in results.items() if "onnx-fp32" in r}
    report = {
        "config": {"layers": args.layers, "hidden": args.hidden, "heads": args.heads, "vocab": args.vocab,
                   "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "runs": args.runs,
                   "thread_budgets": budgets, "batch": 1, "greedy": True},
        "environment": {"cpu": cpu_info()["model"], "cores": os.cpu_count(),
                        "python": sys.version.split()[0], "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "versions": manifest.versions},
        "results": results,
        "bar": {"metric": "onnx-fp32 tokens/s ÷ pytorch tokens/s", "required": BAR, "measured": measured,
                "met": bool(measured) and all(x >= BAR for x in measured.values())},
    }
    print(write_json_and_markdown(report, args.out, markdown(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
