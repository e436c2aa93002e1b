"""What a decode step costs per row on this machine, and what that allows continuous batching's inter-token latency.

    .venv/bin/python benchmarks/bench_decode_rows.py    # writes benchmarks/results/decode-rows.{json,md}

The GPT-2-sized decoder of bench_serve_generate.py (12×768, fp32, random weights), on its slot graph the way the
continuous batch runs it (runtime/generation/slots.py): one decode step of R rows, each with 128 cached tokens,
for R = 1 … 32; one prefill call of S prompt tokens for one row; and the solo graph's decode step (turn-taking at
concurrency 1). Medians of interleaved repeats, in one process.

Why it matters: in a full batch every running row gets one token per step, so a row's mean inter-token gap *is* the
mean step time, and the steps must also carry the joiners' prompts: with C rows, prompts of P tokens on average and
N new tokens per request, C / N requests join per step, P·C / N prompt tokens. So

    mean inter-token gap at concurrency C  ≥  step(C rows) + (P·C / N) × prefill cost per token

and p99 ≥ the mean. The serving benchmark's target (inter-token p99 at concurrency 16 ≤ 2 × turn-taking's
concurrency-1 figure) is reachable only where that bound is under it; the report prints both.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (1, 2, 4, 8, 16, 32)
PREFILL = (16, 32, 64, 128, 256)
CACHED = 128  # tokens each row holds when it decodes
MEAN_PROMPT, NEW = 95, 64  # bench_serve_generate's prompts (16–256 tokens, mean 95) and new tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="build/bench-generate")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "decode-rows"))
    return p.parse_args()


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def slot_calls(gen: Any) -> dict[str, Callable[[], Any]]:
    """One callable per measurement on the slot graph: a decode step of R rows, a prefill of S tokens."""
    from onnxformer.artifact.roles import SLOTS
    from onnxformer.runtime.generation.slots import SlotCache, run_slots

    session, calls = gen.sessions[SLOTS], {}
    rng = np.random.default_rng(0)
    for rows in ROWS:
        cache = SlotCache(session, gen.cache_layout, rows * (CACHED + 64))
        for r in range(rows):
            cache.add(CACHED + 64)
            run_slots(session, cache, r, rng.integers(0, 50000, (1, CACHED)), np.arange(CACHED)[None, :], [CACHED])
            cache.lengths[r] = CACHED
        ids = rng.integers(0, 50000, (rows, 1))
        # The same column rewritten each time: the cache length stays CACHED.
        calls[f"decode {rows}"] = (lambda c=cache, i=ids, n=rows: run_slots(
            session, c, 0, i, np.full((n, 1), CACHED), [CACHED + 1] * n))
    for tokens in PREFILL:
        cache = SlotCache(session, gen.cache_layout, tokens)
        cache.add(tokens)
        ids = rng.integers(0, 50000, (1, tokens))
        calls[f"prefill {tokens}"] = (lambda c=cache, i=ids, n=tokens: run_slots(
            session, c, 0, i, np.arange(n)[None, :], [n]))
    return calls


def solo_step(art: Path) -> Callable[[], Any]:
    """Turn-taking's decode step: the solo graph, one row, CACHED tokens cached (a fresh run every 32 steps)."""
    from onnxformer.runtime.generation import Generator

    gen = Generator.load(art)
    state: dict[str, Any] = {}

    def step() -> None:
        if "run" not in state or state["left"] == 0:
            state["run"], state["left"] = gen.start(" ".join(["token"] * (CACHED - 1)), max_new_tokens=40), 32
            state["run"].step()  # the prefill and first token: not a decode step
        state["run"].step()
        state["left"] -= 1

    return step


def markdown(report: dict[str, Any]) -> str:
    env, r = report["environment"], report["ms"]
    flags = ", ".join(f for f, on in env["flags"].items() if on) or "none"
    one = r["decode 1"]
    lines = ["# Decode step cost per row, and the inter-token bound it sets", "",
             f"GPT-2-sized decoder (12×768, fp32), slot graph, {CACHED} cached tokens per row; medians of "
             f"{report['repeats']} interleaved repeats. CPU: {env['cpu']} ({env['usable_cores']} usable cores; {flags}); "
             f"ONNX Runtime {env['onnxruntime']}, {env['intra_op_threads']} intra-op threads.", "",
             "| call | ms | × one row's decode step | ms per token |", "|---|---|---|---|"]
    for name, ms in r.items():
        n = int(name.split()[-1]) if name != "solo decode 1" else 1
        lines.append(f"| {name} | {ms:.1f} | {ms / one:.2f} | {ms / n:.2f} |")
    per_token = report["prefill_ms_per_token"]
    lines += ["", f"Prefill cost per prompt token (64-token chunks): {per_token:.2f} ms. Bound on the mean inter-token "
              f"gap with C rows, prompts of {MEAN_PROMPT} tokens on average and {NEW} new tokens: step(C) + "
              f"({MEAN_PROMPT}·C/{NEW}) × {per_token:.2f} ms.", "",
              "| concurrency | decode step (ms) | prompt tokens per step | bound on mean gap (ms) | "
              "2 × solo step (ms) |", "|---|---|---|---|---|"]
    for c, b in report["bound"].items():
        lines.append(f"| {c} | {b['step_ms']:.1f} | {b['prompt_tokens_per_step']:.1f} | {b['mean_gap_ms']:.1f} | "
                     f"{b['target_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    import onnxruntime as ort
    from bench_serve_generate import prepare

    from onnxformer.benchmarks.environment import cpu_info
    from onnxformer.runtime.generation import Generator
    from onnxformer.runtime.session import physical_cores

    art = prepare(argparse.Namespace(model="gpt2", work=args.work))
    calls = {**slot_calls(Generator.load(art, batching=True)), "solo decode 1": solo_step(art)}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):  # interleaved rounds: background load hits every call alike
        for name, fn in calls.items():
            samples[name].append(median_ms(fn, args.repeats))
    ms = {name: statistics.median(v) for name, v in samples.items()}
    per_token = ms["prefill 64"] / 64
    bound = {str(c): {"step_ms": ms[f"decode {c}"], "prompt_tokens_per_step": MEAN_PROMPT * c / NEW,
                      "mean_gap_ms": ms[f"decode {c}"] + MEAN_PROMPT * c / NEW * per_token,
                      "target_ms": 2 * ms["solo decode 1"]} for c in ROWS}
    cpu = cpu_info()
    report = {"repeats": args.repeats, "cached_tokens": CACHED, "ms": ms, "prefill_ms_per_token": per_token,
              "bound": bound, "environment": {"cpu": cpu["model"], "flags": cpu["flags"],
                                              "usable_cores": cpu["usable_cores"], "onnxruntime": ort.__version__,
                                              "intra_op_threads": physical_cores()}}
    print(write_json_and_markdown(report, args.out, markdown(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
