"""Scale-out overheads on MiniLM: `onnxformer serve` directly vs through Ray Serve's proxy (1 and 2 replicas) vs
Triton's Python backend (`onnxformer triton --backend python`, a real tritonserver from `make tritonserver`).

    .venv/bin/python benchmarks/bench_scale_out.py     # writes benchmarks/results/scale-out.{json,md}

Every target runs one ONNX Runtime thread per model instance. p50 at concurrency 1 (one-text requests back to back)
and requests/s at concurrency 16, each a closed loop for --seconds. OpenAI /v1/embeddings for serve and Ray;
KServe v2 infer (the same JSON body) for serve and Triton.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import load, texts

from devkit.servers import free_port
from onnxformer.benchmarks.report import write_json_and_markdown

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).parents[1]
TRITON = Path(os.environ.get("ONNXFORMER_TRITON_DIR", ROOT / "build" / "tritonserver"))


def v2_text(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}


async def load_v2(url: str, model: str, concurrency: int, seconds: float, pool: list[str]) -> dict[str, Any]:
    return await load(url, concurrency, seconds, pool, f"/v2/models/{model}/infer", v2_text)


def row(name: str, protocol: str, run: Any, seconds: float) -> dict[str, Any]:
    run(1, 1.0)  # warm-up
    one, many = run(1, seconds), run(16, seconds)
    return {"target": name, "protocol": protocol, "p50_ms_c1": float(np.median(one["latencies"]) * 1000),
            "rps_c16": len(many["latencies"]) / many["seconds"],
            "p50_ms_c16": float(np.median(many["latencies"]) * 1000),
            "errors": one["errors"] + many["errors"]}


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def measure_serve(artifact: Path, seconds: float, pool: list[str]) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onnxformer", "serve", str(artifact), "--port", str(port),
                             "--threads", "1", "--served-model-name", "minilm"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        return [row("onnxformer serve", "openai", lambda c, s: asyncio.run(load(url, c, s, pool)), seconds),
                row("onnxformer serve", "v2", lambda c, s: asyncio.run(load_v2(url, "minilm", c, s, pool)), seconds)]
    finally:
        proc.terminate()
        proc.wait(30)


def measure_ray(artifact: Path, seconds: float, pool: list[str]) -> list[dict]:
    import ray
    from ray import serve

    from onnxformer.serve.ray import app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url, rows = f"http://127.0.0.1:{port}", []
    try:
        for replicas in (1, 2):
            serve.run(app({"artifacts": str(artifact), "num_replicas": replicas, "num_cpus": 1, "threads": 1,
                           "served_model_name": "minilm"}), name="onnxformer", route_prefix="/")
            rows.append(row(f"Ray Serve, {replicas} replica(s)", "openai",
                            lambda c, s: asyncio.run(load(url, c, s, pool)), seconds))
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def measure_triton(artifact: Path, seconds: float, pool: list[str]) -> list[dict]:
    from onnxformer.cli import main

    repo = Path(tempfile.mkdtemp()) / "models"
    main(["triton", str(artifact), "--repo", str(repo), "--backend", "python", "--name", "minilm", "--threads", "1",
          "--python-path", str(TRITON / "numpy1")])
    http = free_port()
    proc = subprocess.Popen([str(TRITON / "server/bin/tritonserver"), f"--model-repository={repo}",
                             f"--backend-directory={TRITON / 'server/backends'}", f"--http-port={http}",
                             f"--grpc-port={free_port()}", f"--metrics-port={free_port()}"],
                            env={**os.environ, "LD_LIBRARY_PATH": str(TRITON / "libs")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"
    try:
        wait_ready(url, proc)
        return [row("Triton 2.51 Python backend", "v2",
                    lambda c, s: asyncio.run(load_v2(url, "minilm", c, s, pool)), seconds)]
    finally:
        proc.terminate()
        proc.wait(30)


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="the exported all-MiniLM-L6-v2 artifact")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale-out"))
    args = parser.parse_args()
    pool = texts()
    load_before = os.getloadavg()
    rows = measure_serve(args.artifact, args.seconds, pool) + measure_ray(args.artifact, args.seconds, pool)
    if (TRITON / "server/bin/tritonserver").exists():
        rows += measure_triton(args.artifact, args.seconds, pool)
    report = {"cpu": cpu(), "cores": os.cpu_count(), "seconds": args.seconds, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "rows": rows}
    lines = ["# Scale-out overheads, all-MiniLM-L6-v2 (one-text requests, 1 ONNX Runtime thread per instance)", "",
             f"CPU: {report['cpu']}, {report['cores']} cores; load average before {load_before[0]:.1f}, "
             f"after {report['load_average_after'][0]:.1f} (a shared machine). {args.seconds:.0f} s per cell.", "",
             "| target | protocol | p50 ms, concurrency 1 | req/s, concurrency 16 | p50 ms, concurrency 16 | errors |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['protocol']} | {r['p50_ms_c1']:.1f} | {r['rps_c16']:.0f} | "
              f"{r['p50_ms_c16']:.0f} | {r['errors']} |" for r in rows]
    print(write_json_and_markdown(report, args.out, "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
