"""A quick model-only latency probe (batch 1 × up to 128 tokens), used to report what a variant costs.

The full side-by-side measurement with warm-up and percentiles is benchmarks/bench_quantize.py; this
probe only backs the numbers quoted in build rows and budget failures. Timing is runtime/timing.py's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxformer.runtime.manifest import Manifest
from onnxformer.runtime.session import create_session
from onnxformer.runtime.timing import time_calls

SEQUENCE = 128


def probe_feeds(manifest: Manifest, sequence: int = SEQUENCE) -> dict[str, np.ndarray]:
    """Batch 1 × ``sequence`` tokens (capped at the model's limit) of ordinary word ids, all attended."""
    length = min(sequence, manifest.max_length or sequence)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, min(20000, manifest.architecture.vocab_size or 20000), (1, length))
    available = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: available[name].astype(np.int64) for name in manifest.input_names}


def median_ms(model: Path, feeds: dict[str, np.ndarray], threads: int | None = None, runs: int = 30) -> float:
    session = create_session(model, threads=threads)
    return float(np.median(time_calls(lambda: session.run(None, feeds), runs=runs, warmup=5)) * 1e3)


def ratio(model: Path, reference: Path, manifest: Manifest, threads: int | None = None) -> dict[str, float]:
    """Latency of ``model`` and of ``reference``, measured interleaved so that load affects both alike."""
    feeds = probe_feeds(manifest)
    ms, ref = [], []
    for _ in range(2):
        ms.append(median_ms(model, feeds, threads))
        ref.append(median_ms(reference, feeds, threads))
    return {"ms": min(ms), "fp32_ms": min(ref), "ratio": min(ms) / min(ref)}
