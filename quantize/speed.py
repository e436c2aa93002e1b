"""A quick model-only latency probe (batch 1 × up to 128 tokens), used to report what a variant costs.

The full side-by-side measurement with warm-up and percentiles is benchmarks/bench_quantize.py; this
probe only backs the numbers quoted in build rows and budget failures.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from onnxformer.runtime.session import create_session

SEQUENCE = 128


def probe_feeds(manifest: dict[str, Any], sequence: int = SEQUENCE) -> dict[str, np.ndarray]:
    """Batch 1 × ``sequence`` tokens (capped at the model's limit) of ordinary word ids, all attended."""
    length = min(sequence, int(manifest["tokenizer"]["max_length"]))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, min(20000, int(manifest["architecture"]["vocab_size"] or 20000)), (1, length))
    available = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i["name"]: available[i["name"]].astype(np.int64) for i in manifest["inputs"]}


def median_ms(model: Path, feeds: dict[str, np.ndarray], threads: int | None = None, runs: int = 30) -> float:
    session = create_session(model, threads=threads)
    for _ in range(5):  # warm-up: first runs allocate and pre-pack
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def ratio(model: Path, reference: Path, manifest: dict[str, Any], threads: int | None = None) -> dict[str, float]:
    """Latency of ``model`` and of ``reference``, measured interleaved so that load affects both alike."""
    feeds = probe_feeds(manifest)
    ms, ref = [], []
    for _ in range(2):
        ms.append(median_ms(model, feeds, threads))
        ref.append(median_ms(reference, feeds, threads))
    return {"ms": min(ms), "fp32_ms": min(ref), "ratio": min(ms) / min(ref)}
