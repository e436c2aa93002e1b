"""Loopback load on `onnxformer serve`: throughput and p50/p99 at several concurrencies, batching on vs off.

    .venv/bin/python benchmarks/bench_serve.py            # writes benchmarks/results/serve.{json,md}
    .venv/bin/python benchmarks/bench_serve.py --seconds 4 --concurrency 1 32   # quicker

Two servers run as their own processes (the real CLI, batching on and --no-batching) so client and server do
not share a GIL; the client is a closed loop of C asyncio workers, each sending one-text POST /v1/embeddings
requests back to back for a fixed time, so the run always stops by itself. On and off are measured in
alternating rounds. Bar: at concurrency 32, batching on >= 2x batching off.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ARTIFACT = Path(__file__).resolve().parents[1] / "build" / "bench-serve" / "all-MiniLM-L6-v2"
WORDS = ("model server batch token latency throughput request queue python onnx runtime vector search "
         "sentence embedding cosine similarity fast slow cheap careful graceful shutdown metric").split()
BAR_CONCURRENCY, BAR_RATIO = 32, 2.0


def minilm_artifact(path: Path) -> Path:
    """Export the bundled all-MiniLM-L6-v2 once; later runs reuse it."""
    from onnxformer.artifact.manifest import is_artifact

    if not is_artifact(path):
        from onnxformer.build import default_model
        from onnxformer.export import export_checkpoint

        export_checkpoint(default_model(), path, name="all-MiniLM-L6-v2", overwrite=True)
    return path


def texts(n: int = 256, seed: int = 0) -> list[str]:
    """Sentences of 4–40 words: a realistic mix for an embedding service."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40))) for _ in range(n)]


class Server:
    """`onnxformer serve` in a subprocess on a free loopback port; SIGTERM on exit."""

    def __init__(self, artifact: Path, batching: bool, threads: int | None, extra: list[str] = ()):
        from devkit.servers import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "onnxformer", "serve", str(artifact), "--port", self.url.rsplit(":", 1)[1],
               "--max-queue", "4096"]
        cmd += [] if batching else ["--no-batching"]
        cmd += ["--threads", str(threads)] if threads else []
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise TimeoutError("server did not become ready in 120 s")

    def __exit__(self, *exc: Any) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def batch_stats(self) -> tuple[float, float, float]:
        """(model calls, texts, seconds inside the model) so far, from /metrics."""
        import httpx

        wanted = ('onnxformer_batch_size_count{lane="embed"}', 'onnxformer_batch_size_sum{lane="embed"}',
                  'onnxformer_model_call_duration_seconds_sum{lane="embed"}')
        values = dict.fromkeys(wanted, 0.0)
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            key, _, value = line.rpartition(" ")
            if key in values:
                values[key] = float(value)
        return tuple(values[k] for k in wanted)


def embeddings_body(text: str) -> dict[str, Any]:
    return {"input": [text]}


async def load(url: str, concurrency: int, seconds: float, pool: list[str], route: str = "/v1/embeddings",
               body: Callable[[str], dict[str, Any]] = embeddings_body) -> dict[str, Any]:
    """C workers, each one request in flight (``body(text)`` posted to ``route``), until the clock runs out.
    Latencies in seconds."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            start = time.perf_counter()
            async with session.post(f"{url}{route}", json=body(pool[i % len(pool)])) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
            i += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        begin = time.perf_counter()
        await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return {"latencies": np.array(latencies), "errors": errors, "seconds": elapsed}


def measure(artifact: Path, levels: list[int], seconds: float, rounds: int, threads: int | None,
            extra: list[str]) -> list[dict]:
    """Both servers run side by side (the idle one costs nothing); at each concurrency the two are measured in
    alternating rounds, so background load on a shared machine hits both alike."""
    pool, rows = texts(), []
    with Server(artifact, True, threads, extra) as on, Server(artifact, False, threads, extra) as off:
        servers = {"on": on, "off": off}
        for server in servers.values():
            asyncio.run(load(server.url, 4, 1.0, pool))  # warm-up: sessions, sockets, allocator
        for c in levels:
            parts: dict[str, list[dict]] = {"on": [], "off": []}
            stats = {mode: [server.batch_stats()] for mode, server in servers.items()}
            for _ in range(rounds):
                for mode, server in servers.items():
                    parts[mode].append(asyncio.run(load(server.url, c, seconds / rounds, pool)))
            for mode, server in servers.items():
                stats[mode].append(server.batch_stats())
                rows.append(_row(mode, c, parts[mode], stats[mode]))
                _print(rows[-1])
    return rows


def _row(mode: str, concurrency: int, parts: list[dict], stats: list[tuple[float, ...]]) -> dict[str, Any]:
    lat = np.concatenate([p["latencies"] for p in parts])
    elapsed = sum(p["seconds"] for p in parts)
    calls, items, busy = (after - before for before, after in zip(stats[0], stats[1]))
    return {"batching": mode, "concurrency": concurrency, "requests": int(lat.size),
            "errors": sum(p["errors"] for p in parts), "seconds": elapsed, "throughput_rps": lat.size / elapsed,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "mean_batch": items / calls if calls else 0.0, "model_busy": busy / elapsed}


def _print(row: dict[str, Any]) -> None:
    print(f"batching {row['batching']:>3}  c={row['concurrency']:<3} {row['throughput_rps']:7.1f} req/s  "
          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  mean batch {row['mean_batch']:5.1f}  "
          f"model busy {row['model_busy']:4.0%}  errors {row['errors']}", flush=True)


def model_ceiling(artifact: Path, merged: int, budget: int, threads: int | None, seconds: float = 6.0,
                  rounds: int = 4) -> dict[str, Any]:
    """In-process, no HTTP: texts/s of Model.embed one text at a time vs ``merged`` texts per call (the runtime
    sorts them by length under ``budget`` tokens). The most dynamic batching can gain on this machine."""
    from onnxformer.artifact.timing import time_calls
    from onnxformer.runtime import Model

    kwargs = {"threads": threads} if threads else {}
    model, pool = Model.load(artifact, max_batch_tokens=budget, **kwargs), texts()
    done = {1: [0, 0.0], merged: [0, 0.0]}
    for _ in range(rounds):  # interleaved, like the server rounds
        for n in done:
            calls = itertools.count()  # call j embeds the n texts from (j * n * 7) mod the pool

            def call(n: int = n) -> None:
                i = (next(calls) * n * 7) % (len(pool) - n)
                model.embed(pool[i:i + n])

            samples = time_calls(call, warmup=0, seconds=seconds / rounds / 2)
            done[n][0] += n * len(samples)
            done[n][1] += sum(samples)
    single, batched = (done[n][0] / done[n][1] for n in done)
    return {"texts_per_s_single": single, "texts_per_s_merged": batched, "merged": merged, "budget": budget,
            "ratio": batched / single, "variant": model.variant}


def summarize(rows: list[dict]) -> dict[str, Any]:
    at = {(r["batching"], r["concurrency"]): r["throughput_rps"] for r in rows}
    on, off = at.get(("on", BAR_CONCURRENCY)), at.get(("off", BAR_CONCURRENCY))
    ratio = on / off if on and off else None
    return {"concurrency": BAR_CONCURRENCY, "required_ratio": BAR_RATIO, "ratio": ratio,
            "passed": ratio is not None and ratio >= BAR_RATIO}


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    variant = report["model_ceiling"]["variant"]
    lines = [f"# Serving benchmark: {report['model']} ({variant}) on loopback", "",
             f"`{report['command']}`", "",
             f"{s['seconds']} s closed loop per point and mode, in {s['rounds']} alternating on/off rounds; one text "
             f"(4-40 words) per POST /v1/embeddings; {report['cpu_count']} CPUs shared by client and server; server "
             f"defaults otherwise (variant {variant}, the runtime's choice among the artifact's variants; max batch 32, "
             f"max delay 2 ms, 256-token runtime batches). 1-minute load average "
             f"{report['load_average']['before']:.1f} before, {report['load_average']['after']:.1f} after "
             "(before: other work on the machine; after: this benchmark's own client and server included).", "",
             "| batching | concurrency | req/s | p50 (ms) | p99 (ms) | mean batch | model busy | requests | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['batching']} | {r['concurrency']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['mean_batch']:.1f} | {r['model_busy']:.0%} | {r['requests']} | {r['errors']} |")
    m = report["model_ceiling"]
    lines += ["", f"Model only (in-process, no HTTP, same texts): {m['texts_per_s_single']:.1f} texts/s one at a time, "
                  f"{m['texts_per_s_merged']:.1f} texts/s with {m['merged']} texts per call (length-sorted, "
                  f"{m['budget']}-token batches): {m['ratio']:.2f}x, the most batching can give here."]
    b = report["bar"]
    ratio = "n/a" if b["ratio"] is None else f"{b['ratio']:.2f}x"
    lines += ["", f"Bar: at concurrency {b['concurrency']}, batching on / off = {ratio} "
                  f"(required >= {b['required_ratio']}x): {'PASS' if b['passed'] else 'FAIL'}"]
    return "\n".join(lines) + "\n"


def _flag(argv: list[str], name: str, default: int) -> int:
    return int(argv[argv.index(name) + 1]) if name in argv else default


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, help="artifact directory (default: export all-MiniLM-L6-v2 once)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--seconds", type=float, default=12.0, help="measured time per point and mode")
    p.add_argument("--rounds", type=int, default=4, help="alternating on/off rounds the time is split into")
    p.add_argument("--threads", type=int, help="server ONNX Runtime threads (default: physical cores)")
    p.add_argument("--server-args", default="", help="extra `onnxformer serve` flags for both servers, e.g. "
                   "'--max-delay-ms 0 --max-batch-tokens 384'")
    p.add_argument("--out", type=Path, default=RESULTS / "serve")
    args = p.parse_args()
    from onnxformer.artifact.manifest import Manifest

    artifact = minilm_artifact(args.artifact or DEFAULT_ARTIFACT)
    load_before = os.getloadavg()
    rows = measure(artifact, args.concurrency, args.seconds, args.rounds, args.threads, args.server_args.split())
    ceiling = model_ceiling(artifact, 32, _flag(args.server_args.split(), "--max-batch-tokens", 256), args.threads)
    report = {"model_ceiling": ceiling, "model": Manifest.load(artifact).name,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
              "settings": {"seconds": args.seconds, "rounds": args.rounds, "concurrency": args.concurrency,
                           "threads": args.threads, "server_args": args.server_args},
              "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
              "results": rows, "bar": summarize(rows)}
    print(write_json_and_markdown(report, args.out, markdown(report)))


if __name__ == "__main__":
    main()
