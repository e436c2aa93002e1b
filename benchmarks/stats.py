"""Latency statistics: timed loops and percentiles, kept as floats until the report formats them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MIN_ITERS = 5  # a --seconds budget still yields enough samples for a p90


@dataclass(frozen=True)
class Budget:
    """How long to measure one configuration: a fixed iteration count or a time budget."""

    warmup: int = 3
    iters: int | None = None
    seconds: float | None = 2.0

    def done(self, count: int, elapsed: float) -> bool:
        if self.iters is not None:
            return count >= self.iters
        return count >= MIN_ITERS and elapsed >= (self.seconds or 0.0)


def time_calls(fn: Callable[[], Any], budget: Budget, synchronize: Callable[[], None] = lambda: None) -> np.ndarray:
    """Seconds per call after warm-up. ``synchronize`` waits for queued GPU work so timings are real."""
    for _ in range(budget.warmup):
        fn()
    synchronize()
    samples: list[float] = []
    start = time.perf_counter()
    while not budget.done(len(samples), time.perf_counter() - start):
        t0 = time.perf_counter()
        fn()
        synchronize()
        samples.append(time.perf_counter() - t0)
    return np.asarray(samples, dtype=np.float64)


def summarize(seconds: np.ndarray, batch: int, seq: int) -> dict[str, float]:
    """Percentiles in ms and throughput; every value a float."""
    ms = seconds * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    mean_s = float(seconds.mean())
    return {
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "iterations": float(len(ms)),
        "seq_per_s": float(batch / mean_s),
        "tokens_per_s": float(batch * seq / mean_s),
    }
