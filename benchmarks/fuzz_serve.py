"""The long hostile-input run against `onnxformer serve` on the real all-MiniLM-L6-v2 (a subprocess, as deployed).

    python benchmarks/fuzz_serve.py [--requests 10000] [--out benchmarks/results/fuzz_serve.json]

Measures: hostile requests per route × family × status (the seeded generator of benchmarks/devkit/fuzz.py; target: no
5xx), max latency, RSS growth of the server over 2,000 varied /v1/embeddings requests (≤ 50 MiB), 64 clients ×
100 requests (errors: 0), and time to 429 on a full queue (--max-queue 8; target < 100 ms): with 128 client threads
(the load measures itself too: they share the server's cores), and as one probe client sees it while 8 others keep
the queue full.
"""
from __future__ import annotations

import collections
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from bench_serve import Server, minilm_artifact, texts

from devkit.fuzz import Generator, Routes, problems, send
from onnxformer.benchmarks.environment import cpu_info

ROOT = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile(url: str, model: str, n: int) -> dict[str, Any]:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    families: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    bad, worst = [], 0.0
    with httpx.Client(timeout=60) as client:
        for req in Generator(Routes(model), seed=2026).requests(n):
            start = time.perf_counter()
            r = send(client, url, req)
            worst = max(worst, time.perf_counter() - start)
            counts[req.route][str(r.status_code)] += 1
            families[req.family][str(r.status_code)] += 1
            found = problems(r.status_code, r.text, r.headers.get("content-type", ""))
            if found:
                bad.append({"family": req.family, "path": req.path, "status": r.status_code, "problems": found})
    fivexx = sum(c for per in counts.values() for s, c in per.items() if s.startswith("5") and s != "503")
    return {"requests": n, "by_route": {k: dict(v) for k, v in counts.items()},
            "by_family": {k: dict(v) for k, v in families.items()}, "5xx": fivexx, "bad_answers": bad[:20],
            "bad_count": len(bad), "max_latency_s": round(worst, 3)}


def rss_growth(server: Server, n: int = 2000) -> dict[str, Any]:
    pool = texts(512, seed=7)
    with httpx.Client(timeout=60) as client:
        for i in range(50):  # warm: allocator pools and ORT arenas settle first
            client.post(f"{server.url}/v1/embeddings", json={"input": pool[i % 512]})
        before = rss_mib(server.proc.pid)
        for i in range(n):  # varied: 1-4 texts of 4-40 words, either encoding, now and then a bad one
            batch = [pool[(i * 7 + j) % 512] for j in range(1 + i % 4)]
            body: dict[str, Any] = {"input": batch, "encoding_format": "base64" if i % 3 == 0 else "float"}
            if i % 10 == 0:
                body["input"] = batch + [""]  # a 400 every tenth request
            client.post(f"{server.url}/v1/embeddings", json=body)
        after = rss_mib(server.proc.pid)
    return {"requests": n, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "growth_mib": round(after - before, 1)}


def many_clients(url: str, clients: int = 64, each: int = 100) -> dict[str, Any]:
    pool = texts(256, seed=3)

    def client_run(k: int) -> collections.Counter:
        seen: collections.Counter = collections.Counter()
        with httpx.Client(timeout=120) as client:
            for i in range(each):
                try:
                    seen[client.post(f"{url}/v1/embeddings", json={"input": pool[(k + i) % 256]}).status_code] += 1
                except httpx.HTTPError as e:
                    seen[type(e).__name__] += 1
        return seen

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        total = sum(ex.map(client_run, range(clients)), collections.Counter())
    return {"clients": clients, "requests_each": each, "statuses": {str(k): v for k, v in total.items()},
            "errors": sum(v for k, v in total.items() if k != 200), "seconds": round(time.perf_counter() - start, 1)}


def time_to_429(artifact: Path, clients: int = 128, each: int = 20) -> dict[str, Any]:
    with Server(artifact, batching=True, threads=None, extra=["--max-queue", "8"]) as server:
        body = {"input": [" ".join(texts(1, seed=i)[0] for i in range(6))] * 8}  # 8 long texts: fills the queue

        def client_run(k: int) -> list[tuple[int, float]]:
            return _timed_posts(f"{server.url}/v1/embeddings", body, each)

        with ThreadPoolExecutor(clients) as ex:
            results = [x for part in ex.map(client_run, range(clients)) for x in part]
    return {"clients": clients, "requests": len(results), **_refusals(results),
            "ok_median_ms": round(1000 * statistics.median([t for s, t in results if s == 200] or [0]), 1)}


def _timed_posts(url: str, body: dict[str, Any], n: int) -> list[tuple[int, float]]:
    """``n`` sequential POSTs from one client: (status, seconds) each."""
    out = []
    with httpx.Client(timeout=120) as client:
        for _ in range(n):
            start = time.perf_counter()
            status = client.post(url, json=body).status_code
            out.append((status, time.perf_counter() - start))
    return out


def _refusals(results: list[tuple[int, float]]) -> dict[str, Any]:
    """How many were refused with 429, the statuses, and the time to a 429 (p50, p99, max; ms)."""
    refused = sorted(t for s, t in results if s == 429)
    pct = lambda q: round(1000 * refused[min(len(refused) - 1, int(q * len(refused)))], 1) if refused else None
    return {"429": len(refused), "statuses": dict(collections.Counter(str(s) for s, _ in results)),
            "time_to_429_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}}


def time_to_429_probe(artifact: Path, holders: int = 8, probes: int = 200) -> dict[str, Any]:
    """What one refused client sees: ``holders`` threads keep the queue full (--max-queue 8) while a single probe
    client sends ``probes`` sequential requests and times each 429. Unlike ``time_to_429``, the 128 client
    threads of the load are not there to compete with the server for the same cores."""
    import threading

    with Server(artifact, batching=True, threads=None, extra=["--max-queue", "8"]) as server:
        body = {"input": [" ".join(texts(1, seed=i)[0] for i in range(6))] * 8}
        stop = threading.Event()

        def hold() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    client.post(f"{server.url}/v1/embeddings", json=body)

        threads = [threading.Thread(target=hold, daemon=True) for _ in range(holders)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the queue is full from here on
        results = _timed_posts(f"{server.url}/v1/embeddings", body, probes)
        stop.set()
        for t in threads:
            t.join(timeout=120)
    return {"holders": holders, "probes": probes, **_refusals(results)}


def main() -> None:
    argv = sys.argv[1:]
    n = int(argv[argv.index("--requests") + 1]) if "--requests" in argv else 10_000
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else ROOT / "results" / "fuzz_serve.json"
    artifact = minilm_artifact(ROOT.parent / "build" / "all-MiniLM-L6-v2")
    report: dict[str, Any] = {"cpu": cpu_info(), "artifact": "all-MiniLM-L6-v2 (fp32)",
                              "load_average_at_start": list(os.getloadavg())}
    with Server(artifact, batching=True, threads=None) as server:
        start = time.perf_counter()
        report["hostile"] = hostile(server.url, "all-MiniLM-L6-v2", n)
        report["hostile"]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({k: v for k, v in report["hostile"].items() if k != "by_family"}, indent=1), flush=True)
        report["rss"] = rss_growth(server)
        print(report["rss"], flush=True)
        report["many_clients"] = many_clients(server.url)
        print(report["many_clients"], flush=True)
        metrics = httpx.get(f"{server.url}/metrics").text
        report["internal_errors_total"] = next((float(l.split()[1]) for l in metrics.splitlines()
                                                if l.startswith("onnxformer_internal_errors_total")), None)
    report["overload"] = time_to_429(artifact)
    print(report["overload"], flush=True)
    report["overload_probe"] = time_to_429_probe(artifact)
    print(report["overload_probe"], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
