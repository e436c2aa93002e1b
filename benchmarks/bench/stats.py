"""Latency statistics: interleaved rounds of the runtime's timing loop (runtime.timing), and percentiles,
kept as floats until the report formats them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from onnxformer.artifact.timing import time_calls

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


BLOCK = 5  # timed calls per configuration per round


def _then(call: Callable[[], Any], sync: Callable[[], Any]) -> Callable[[], None]:
    """``call`` then ``sync`` (a GPU stream's wait): one timed unit."""
    def both() -> None:
        call()
        sync()
    return both


def time_interleaved(calls: list[Callable[[], Any]], budget: Budget,
                     syncs: list[Callable[[], None]] | None = None, block: int = BLOCK) -> list[np.ndarray]:
    """Seconds per call for several configurations, timed in rounds of short blocks.

    Each round gives every configuration one untimed call followed by ``block`` timed ones. Rounds
    spread background load on a shared machine over every configuration alike; the untimed call
    re-wakes the configuration's thread pool (OpenMP for PyTorch, ONNX Runtime's own), which went
    to sleep while the others ran, so no configuration pays for the one before it. A ``seconds``
    budget is per configuration, so the rounds run for ``seconds × len(calls)`` in total.
    """
    if not calls:
        return []
    syncs = syncs or [lambda: None] * len(calls)
    for fn, sync in zip(calls, syncs):
        for _ in range(budget.warmup):
            fn()
        sync()
    samples: list[list[float]] = [[] for _ in calls]
    per_config = Budget(budget.warmup, budget.iters, (budget.seconds or 0.0) * len(calls))
    start = time.perf_counter()
    while not per_config.done(len(samples[0]), time.perf_counter() - start):
        take = block if budget.iters is None else min(block, budget.iters - len(samples[0]))
        for fn, sync, out in zip(calls, syncs, samples):  # one untimed re-warm call, then the block
            out += time_calls(_then(fn, sync), runs=take, warmup=1)
    return [np.asarray(s, dtype=np.float64) for s in samples]


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
