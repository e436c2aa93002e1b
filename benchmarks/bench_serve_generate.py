"""Serving generation: continuous batching vs turn-taking, same run, over the real HTTP server.

    .venv/bin/python benchmarks/bench_serve_generate.py    # writes benchmarks/results/serve-generate.{json,md,png}
    .venv/bin/python benchmarks/bench_serve_generate.py --model bart    # → serve-generate-bart.{json,md,png}

A GPT-2-sized decoder (12 layers, 768 hidden, random weights, end-of-sequence disabled so every request makes
exactly ``--new-tokens``; built by bench_generate.prepare), or with ``--model bart`` a BART-base-sized
encoder-decoder (6 + 6 layers, 768 hidden, 3072 feed-forward, 50265 words; its sources are the prompts), served by
``onnxformer serve``'s app in a server
process of its own, one fresh process per engine and concurrency (so its peak RSS is the server's alone).
``C`` client threads in this process each stream completions back to back (``--rounds`` each, at most
``--max-requests`` per level; prompts of mixed length, 16–256 tokens, cycled per request) from /v1/completions.
For each concurrency the two servers run one after the other: continuous batching (``--max-slots`` rows) and
today's turn-taking (``--no-continuous-batching``). Generated tokens/s: all requests' completion tokens (their
``usage``) ÷ the clients' wall time. TTFT (request checked and tokenized → first token) and inter-token gaps:
timed in the server, per token, the same way for both engines. Peak RSS: the server process's high-water mark
during the load (reset after loading and warm-up, so it includes the loaded model).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
LENGTHS = (16, 64, 256, 32, 128, 48, 192, 24)
ENGINES = ("continuous", "turn-taking")
MODELS = {"gpt2": "GPT-2-sized decoder (12×768, random weights, fp32)",
          "bart": "BART-base-sized encoder-decoder (6+6 layers × 768, random weights, fp32; the prompts are its sources)"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="gpt2")
    p.add_argument("--work", default="build/bench-generate")
    p.add_argument("--concurrency", default="1,4,16,32")
    p.add_argument("--rounds", type=int, default=2, help="requests per client, back to back")
    p.add_argument("--max-requests", type=int, default=32,
                   help="requests per level at most (at least one per client): turn-taking runs them one by one")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--max-slots", type=int, default=16)
    p.add_argument("--prefill-chunk", type=int, default=64, help="continuous: prompt tokens per prefill call")
    p.add_argument("--out", help="results path without suffix (default: benchmarks/results/serve-generate[-MODEL])")
    p.add_argument("--server", help=argparse.SUPPRESS)  # internal: run one server process (JSON spec)
    return p.parse_args()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stream_one(url: str, prompt: str, new: int) -> int:
    """One streamed completion; its completion tokens (from the last event's usage)."""
    import httpx

    usage = None
    body = {"prompt": prompt, "max_tokens": new, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            usage = event.get("usage") or usage
    return usage["completion_tokens"]


# --- the server process ---------------------------------------------------------------------------------
class Probe:
    """Server-side token times of every request, for both engines: the continuous batch's sequences carry
    them; a turn-taking run is timed per step. (Random weights over a 50257-word vocabulary mostly pick ids
    the 384-token tokenizer decodes to nothing, so the client sees few text events: time tokens, not events.)"""

    def __init__(self, gen: Any):
        from onnxformer.runtime.generation import scheduler

        self.requests: list[tuple[float, list[float]]] = []
        probe, prepare, start = self, scheduler.Scheduler.prepare, gen.start

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

    def timings(self) -> dict[str, list[float]]:
        return {"ttft": [times[0] - arrived for arrived, times in self.requests if times],
                "gaps": [b - a for _, times in self.requests for a, b in zip(times, times[1:])]}


def serve(spec: dict[str, Any]) -> int:
    """One server on a free port; answers the parent's commands on stdin, one line each (reset, report)."""
    from devkit.servers import running_server
    from onnxformer.runtime.generation import Generator

    gen = Generator.load(spec["artifact"], batching=spec["options"].get("continuous_batching", True))
    probe = Probe(gen)
    with running_server(lambda: gen, max_queue=4096, timeout_s=3600, **spec["options"]) as url:
        print(f"READY {url}", flush=True)
        for line in sys.stdin:
            if line.strip() == "reset":  # after the warm-up: the load's requests and memory peak only
                probe.requests.clear()
                Path("/proc/self/clear_refs").write_text("5")
                print("OK", flush=True)
            elif line.strip() == "report":
                print(json.dumps({**probe.timings(), "peak_rss_mib": peak_rss_mib()}), flush=True)
    return 0


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """The parent's handle on one server process."""

    def __init__(self, artifact: Path, options: dict[str, Any]):
        spec = json.dumps({"artifact": str(artifact), "options": options})
        self.proc = subprocess.Popen([sys.executable, __file__, "--server", spec], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"the server process did not start (said {line!r}; exit {self.proc.wait()})")
        self.url = line.split()[1]

    def ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.stdin.close()
        if self.proc.wait(timeout=120) != 0:
            raise RuntimeError(f"the server process exited {self.proc.returncode}")


# --- the clients --------------------------------------------------------------------------------------------
def load(server: Server, prompts: list[str], concurrency: int, requests: int, new: int) -> dict[str, Any]:
    """``requests`` streamed completions from ``concurrency`` clients, each back to back."""
    tokens: list[int] = []
    lock = threading.Lock()
    share = [requests // concurrency + (c < requests % concurrency) for c in range(concurrency)]

    def client(c: int) -> None:
        for r in range(share[c]):
            n = stream_one(server.url, prompts[(c + r * concurrency) % len(prompts)], new)
            with lock:
                tokens.append(n)

    assert server.ask("reset").strip() == "OK"
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    seen = json.loads(server.ask("report"))
    ttft, gaps = seen["ttft"], seen["gaps"]
    if len(tokens) != requests:
        raise RuntimeError(f"{requests - len(tokens)} of {requests} requests failed (see the server's log above)")
    return {"requests": len(tokens), "tokens": sum(tokens), "wall_s": wall, "tokens_per_s": sum(tokens) / wall,
            "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99),
            "itl_p50_s": percentile(gaps, 0.5), "itl_p99_s": percentile(gaps, 0.99),
            "peak_rss_mib": seen["peak_rss_mib"]}


# --- the report ---------------------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    env, cfg = report["environment"], report["config"]
    flags = ", ".join(f for f, on in env["flags"].items() if on) or "none of " + ", ".join(env["flags"])
    lines = ["# Serving generation: continuous batching vs turn-taking", "",
             f"{MODELS[cfg.get('model', 'gpt2')]}, /v1/completions streamed, {cfg['new_tokens']} new "
             f"tokens per request, prompts of {', '.join(map(str, LENGTHS))} tokens cycled, {cfg['rounds']} requests "
             f"per client back to back (at most {cfg['max_requests']} per level), greedy; continuous: "
             f"{cfg['max_slots']} slots, prefill chunk {cfg['prefill_chunk'] or 'whole prompt'}. Server in a process of "
             f"its own (fresh per row), clients in another. CPU: {env['cpu']} ({env['usable_cores']} usable cores; "
             f"{flags}); ONNX Runtime {env['onnxruntime']}, {env['intra_op_threads']} intra-op threads; load average "
             f"(1/5/15 min) before/after {env['loadavg_before']} / {env['loadavg_after']}. Same run.",
             "", "| concurrency | engine | requests | tokens/s | × turn-taking | TTFT p50 (ms) | TTFT p99 (ms) | "
                 "inter-token p50 (ms) | inter-token p99 (ms) | server peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c, pair in report["results"].items():
        base = pair["turn-taking"]["tokens_per_s"]
        for name, r in pair.items():
            lines.append(f"| {c} | {name} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f} | "
                         f"{1000 * r['ttft_p50_s']:.0f} | {1000 * r['ttft_p99_s']:.0f} | {1000 * r['itl_p50_s']:.0f} | "
                         f"{1000 * r['itl_p99_s']:.0f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """tokens/s, inter-token p50/p99 and server peak RSS against concurrency, one line per engine."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    from onnxformer.artifact.files import atomic_write_bytes

    levels = [int(c) for c in report["results"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, style, color in zip(ENGINES, ("o-", "s--"), ("C0", "C1")):
        rows = [report["results"][str(c)][name] for c in levels]
        axes[0].plot(levels, [r["tokens_per_s"] for r in rows], style, color=color, label=name)
        axes[1].plot(levels, [1000 * r["itl_p50_s"] for r in rows], style, color=color, label=f"{name} p50")
        axes[1].plot(levels, [1000 * r["itl_p99_s"] for r in rows], style, color=color, alpha=0.4, label=f"{name} p99")
        axes[2].plot(levels, [r["peak_rss_mib"] for r in rows], style, color=color, label=name)
    for ax, label in zip(axes, ("generated tokens/s", "inter-token gap (ms)", "server peak RSS (MiB)")):
        ax.set(xlabel="concurrent clients", ylabel=label, xscale="log", xticks=levels, xticklabels=levels)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    env = report["environment"]
    fig.suptitle(f"continuous batching vs turn-taking — {report['config'].get('model', 'gpt2')}-sized fp32, {env['cpu']}, "
                 f"{env['usable_cores']} cores, load {env['loadavg_before'][0]}→{env['loadavg_after'][0]}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def prepare(args: argparse.Namespace) -> Path:
    """The model's artifact (built once, cached in --work)."""
    import bench_generate

    if args.model == "gpt2":
        prep = argparse.Namespace(work=args.work, layers=12, hidden=768, heads=12, vocab=50257)
        return bench_generate.prepare(prep, ["fp32"])[1]
    from onnxformer.artifact.manifest import is_artifact
    from onnxformer.export import export_checkpoint
    from onnxformer.export.generative_random import make_generative_checkpoint

    ckpt, art = Path(args.work) / "ckpt-bart-base", Path(args.work) / "artifact-bart-base"
    if not (ckpt / "config.json").is_file():  # end-of-sequence off: every request makes exactly --new-tokens
        make_generative_checkpoint(ckpt, "bart", layers=6, hidden=768, heads=12, positions=1024, vocab_size=50265,
                                   encoder_ffn_dim=3072, decoder_ffn_dim=3072, init_std=0.02, eos_token_id=None,
                                   forced_eos_token_id=None)
    if not is_artifact(art):
        export_checkpoint(str(ckpt), art, overwrite=True)
    return art


def main() -> int:
    args = parse_args()
    if args.server:
        return serve(json.loads(args.server))
    import bench_generate
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from onnxformer.benchmarks.environment import cpu_info
    from onnxformer.runtime.session import physical_cores

    art = prepare(args)
    tok = Tokenizer.from_file(str(art / "tokenizer.json"))
    prompts = [bench_generate.exact_prompt(tok, n) for n in LENGTHS]
    levels = [int(c) for c in args.concurrency.split(",")]
    cpu, before = cpu_info(), [round(x, 2) for x in os.getloadavg()]
    engines = {"continuous": dict(continuous_batching=True, max_slots=args.max_slots, prefill_chunk=args.prefill_chunk,
                                  max_cached_tokens=args.max_slots * (max(LENGTHS) + args.new_tokens)),
               "turn-taking": dict(continuous_batching=False)}
    results: dict[str, dict[str, Any]] = {}
    for c in levels:
        results[str(c)] = {}
        requests = max(c, min(c * args.rounds, args.max_requests))
        for name in ENGINES:
            server = Server(art, engines[name])
            try:
                stream_one(server.url, prompts[0], 4)  # warm-up
                r = load(server, prompts, c, requests, args.new_tokens)
            finally:
                server.close()
            results[str(c)][name] = r
            print(f"concurrency {c} {name}: {r['tokens_per_s']:.1f} tokens/s, TTFT p50 {1000 * r['ttft_p50_s']:.0f} ms, "
                  f"inter-token p50/p99 {1000 * r['itl_p50_s']:.0f}/{1000 * r['itl_p99_s']:.0f} ms, "
                  f"server peak RSS {r['peak_rss_mib']:.0f} MiB (load {os.getloadavg()[0]:.1f})", flush=True)
    report = {"config": {"model": args.model, "new_tokens": args.new_tokens, "rounds": args.rounds,
                         "max_requests": args.max_requests,
                         "max_slots": args.max_slots, "prefill_chunk": args.prefill_chunk,
                         "prompt_tokens": list(LENGTHS), "concurrency": levels},
              "environment": {"cpu": cpu["model"], "flags": cpu["flags"], "usable_cores": cpu["usable_cores"],
                              "onnxruntime": ort.__version__, "intra_op_threads": physical_cores(),
                              "loadavg_before": before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
              "results": results}
    out = args.out or str(RESULTS / ("serve-generate" + ("" if args.model == "gpt2" else f"-{args.model}")))
    print(write_json_and_markdown(report, out, markdown(report)))
    plot(report, Path(out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
