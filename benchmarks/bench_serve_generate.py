"""Serving generation: continuous batching vs turn-taking, same run, over the real HTTP server.

    .venv/bin/python benchmarks/bench_serve_generate.py    # writes benchmarks/results/serve-generate.{json,md}

A GPT-2-sized decoder (12 layers, 768 hidden, random weights, end-of-sequence disabled so every request makes
exactly ``--new-tokens``; built by bench_generate.prepare) served by ``onnxformer serve``'s app in-process.
``C`` client threads each stream ``--rounds`` completions back to back (prompts of mixed length, 16–256
tokens, cycled per request) from /v1/completions. For each concurrency the two servers run one after the
other: continuous batching (``--max-slots`` rows) and today's turn-taking (``--no-continuous-batching``).
Generated tokens/s: all requests' completion tokens (their ``usage``) ÷ the clients' wall time. TTFT (request
checked and tokenized → first token) and inter-token gaps: timed in the server, per token, the same way for
both engines. Peak RSS of the process (client and server; reset before each server, /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"
LENGTHS = (16, 64, 256, 32, 128, 48, 192, 24)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="build/bench-generate")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--rounds", type=int, default=2, help="requests per client, back to back")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--max-slots", type=int, default=16)
    p.add_argument("--prefill-chunk", type=int, default=64, help="continuous: prompt tokens per prefill call")
    p.add_argument("--out", default=str(RESULTS / "serve-generate"))
    return p.parse_args()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stream_one(url: str, prompt: str, new: int) -> int:
    """One streamed completion; its completion tokens (from the last event's usage)."""
    import httpx

    usage = None
    body = {"prompt": prompt, "max_tokens": new, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            usage = event.get("usage") or usage
    return usage["completion_tokens"]


class Probe:
    """Server-side token times of every request, for both engines: the continuous batch's sequences carry
    them; a turn-taking run is timed per step. (Random weights over a 50257-word vocabulary mostly pick ids
    the 384-token tokenizer decodes to nothing, so the client sees few text events: time tokens, not events.)"""

    def __init__(self, gen: Any):
        from onnxformer.runtime.generation import scheduler

        self.requests: list[tuple[float, list[float]]] = []
        self._cls, self._prepare, self._gen = scheduler.Scheduler, scheduler.Scheduler.prepare, gen
        probe, prepare, start = self, self._prepare, gen.start

        def timed_prepare(batch: Any, *args: Any, **kwargs: Any) -> Any:
            seq = prepare(batch, *args, **kwargs)
            probe.requests.append((seq.submitted, seq.token_times))
            return seq

        def timed_start(*args: Any, **kwargs: Any) -> Any:
            run, times = start(*args, **kwargs), []
            probe.requests.append((time.monotonic(), times))
            step = run.step

            def timed_step() -> bool:
                before = len(run.streams[0].ids)
                more = step()
                if len(run.streams[0].ids) > before:
                    times.append(time.monotonic())
                return more

            run.step = timed_step
            return run

        scheduler.Scheduler.prepare, gen.start = timed_prepare, timed_start

    def close(self) -> None:
        self._cls.prepare = self._prepare
        del self._gen.start


def load(url: str, probe: Probe, prompts: list[str], concurrency: int, rounds: int, new: int) -> dict[str, Any]:
    tokens: list[int] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(rounds):
            n = stream_one(url, prompts[(c * rounds + r) % len(prompts)], new)
            with lock:
                tokens.append(n)

    probe.requests.clear()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = [times[0] - arrived for arrived, times in probe.requests if times]
    gaps = [b - a for _, times in probe.requests for a, b in zip(times, times[1:])]
    return {"requests": len(tokens), "tokens": sum(tokens), "wall_s": wall, "tokens_per_s": sum(tokens) / wall,
            "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99),
            "itl_p50_s": percentile(gaps, 0.5), "itl_p99_s": percentile(gaps, 0.99)}


def peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def markdown(report: dict[str, Any]) -> str:
    env, cfg = report["environment"], report["config"]
    flags = ", ".join(f for f, on in env["flags"].items() if on) or "none of " + ", ".join(env["flags"])
    lines = ["# Serving generation: continuous batching vs turn-taking", "",
             f"GPT-2-sized decoder (12×768, random weights, fp32), /v1/completions streamed, {cfg['new_tokens']} new "
             f"tokens per request, prompts of {', '.join(map(str, LENGTHS))} tokens cycled, {cfg['rounds']} requests "
             f"per client back to back, greedy; continuous: {cfg['max_slots']} slots, prefill chunk "
             f"{cfg.get('prefill_chunk', 0) or 'whole prompt'}. CPU: {env['cpu']} ({env['usable_cores']} usable cores; {flags}); "
             f"load average before/after {env['loadavg_before']} / {env['loadavg_after']}. Same run, same process.",
             "", "| concurrency | engine | tokens/s | × turn-taking | TTFT p50 (ms) | TTFT p99 (ms) | "
                 "inter-token p50 (ms) | inter-token p99 (ms) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, pair in report["results"].items():
        base = pair["turn-taking"]["tokens_per_s"]
        for name, r in pair.items():
            lines.append(f"| {c} | {name} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f} | "
                         f"{1000 * r['ttft_p50_s']:.0f} | {1000 * r['ttft_p99_s']:.0f} | {1000 * r['itl_p50_s']:.0f} | "
                         f"{1000 * r['itl_p99_s']:.0f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    import bench_generate
    from tokenizers import Tokenizer

    from onnxformer.benchmarks.environment import cpu_info
    from onnxformer.runtime.generation import Generator
    from onnxformer.serve.testing import running_server

    prep = argparse.Namespace(work=args.work, layers=12, hidden=768, heads=12, vocab=50257)
    _, art = bench_generate.prepare(prep, ["fp32"])
    tok = Tokenizer.from_file(str(art / "tokenizer.json"))
    prompts = [bench_generate.exact_prompt(tok, n) for n in LENGTHS]
    levels = [int(c) for c in args.concurrency.split(",")]
    cpu, before = cpu_info(), [round(x, 2) for x in os.getloadavg()]
    results: dict[str, dict[str, Any]] = {}
    engines = {"continuous": dict(continuous_batching=True, max_slots=args.max_slots, prefill_chunk=args.prefill_chunk,
                                  max_cached_tokens=args.max_slots * (max(LENGTHS) + args.new_tokens)),
               "turn-taking": dict(continuous_batching=False)}
    gen = Generator.load(art)  # one model for every server: the RSS differences are the engines' own
    for c in levels:
        results[str(c)] = {}
        for name, options in engines.items():
            gc.collect()
            peak_rss_reset()
            probe = Probe(gen)
            with running_server(lambda: gen, max_queue=4096, timeout_s=3600, **options) as url:
                stream_one(url, prompts[0], 4)  # warm-up
                r = load(url, probe, prompts, c, args.rounds, args.new_tokens)
            probe.close()
            r["peak_rss_mib"] = peak_rss_mib()
            results[str(c)][name] = r
            print(f"concurrency {c} {name}: {r['tokens_per_s']:.1f} tokens/s, TTFT p50 {1000 * r['ttft_p50_s']:.0f} ms, "
                  f"inter-token p99 {1000 * r['itl_p99_s']:.0f} ms", flush=True)
    report = {"config": {"new_tokens": args.new_tokens, "rounds": args.rounds, "max_slots": args.max_slots,
                         "prefill_chunk": args.prefill_chunk,
                         "prompt_tokens": list(LENGTHS), "concurrency": levels},
              "environment": {"cpu": cpu["model"], "flags": cpu["flags"], "usable_cores": cpu["usable_cores"],
                              "loadavg_before": before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
              "results": results}
    print(write_json_and_markdown(report, args.out, markdown(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
