"""The one timing loop: warm-up, then wall-clock samples of a call, kept as floats (seconds).

The quantize stage's latency probe, the benchmarks and the generation benchmark all time through
``time_calls``; percentiles and formatting are the caller's (benchmarks/bench/stats.py).
"""
from __future__ import annotations

import time
from typing import Any, Callable


def time_calls(fn: Callable[[], Any], *, runs: int = 30, warmup: int = 5, seconds: float | None = None) -> list[float]:
    """``warmup`` untimed calls (first runs allocate and pre-pack), then ``runs`` timed ones, or as many as
    fit in ``seconds`` when given (at least one). Returns each call's duration in seconds."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = None if seconds is None else time.perf_counter() + seconds
    while (len(samples) < runs) if deadline is None else (not samples or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """One call: (seconds, its result)."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
