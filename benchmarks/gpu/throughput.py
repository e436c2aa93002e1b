"""Mixed-length throughput: 1,000 texts of varied length, end to end (tokenize, run, pool) in batches of 32, the
workload where unpadding pays. Each configuration is loaded, warmed on one batch, timed over all texts and
released before the next; one that cannot load says why.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Sequence

import numpy as np

from onnxformer.benchmarks.inputs import WORDS
from onnxformer.benchmarks.runners import Candidate

TEXTS, BATCH = 1000, 32
# The configurations the mixed-length row compares (labels as runners/peers make them).
MIXED = ("pytorch-fp16-sdpa@cuda", "fp16@cuda", "fp16@cuda-packed")


def mixed_texts(n: int = TEXTS, seed: int = 0, shortest: int = 4, longest: int = 120) -> list[str]:
    """``n`` texts of ``shortest``..``longest`` words, lengths drawn log-uniformly (many short, few long), as
    sentence-embedding traffic tends to be; fixed by ``seed`` so every configuration sees the same texts."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(shortest), np.log(longest), size=n)).astype(int)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths]


def measure(candidate: Candidate, texts: Sequence[str], batch: int = BATCH, deadline: float | None = None
            ) -> dict[str, Any]:
    """texts/s of ``candidate`` over ``texts`` in order, ``batch`` at a time (after one warm-up batch)."""
    row: dict[str, Any] = {"config": candidate.name, "texts": len(texts), "batch": batch, "measured": False}
    if candidate.load is None:
        return {**row, "reason": f"unavailable: {candidate.reason}"}
    try:
        candidate.prepare()
        runner = candidate.load()
        batches = [list(texts[i:i + batch]) for i in range(0, len(texts), batch)]
        runner.end_to_end(batches[0])
        runner.synchronize()
        start = time.perf_counter()
        for i, chunk in enumerate(batches):
            if deadline is not None and time.time() > deadline:
                return {**row, "reason": f"time limit reached after {i} of {len(batches)} batches"}
            runner.end_to_end(chunk)
        runner.synchronize()
        seconds = time.perf_counter() - start
    except Exception as e:  # one configuration's failure is its row, not the run's
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {**row, "reason": f"failed: {type(e).__name__}: {first}"}
    finally:
        gc.collect()
    return {**row, "measured": True, "seconds": seconds, "texts_per_s": len(texts) / seconds}


def run_mixed(candidates: Sequence[Candidate], texts: Sequence[str], deadline: float | None = None,
              names: Sequence[str] = MIXED) -> list[dict[str, Any]]:
    """One row per name in ``names``: measured, or why not (a name with no candidate here says so)."""
    by_name = {c.name: c for c in candidates}
    rows = []
    for name in names:
        if name not in by_name:
            rows.append({"config": name, "texts": len(texts), "measured": False,
                         "reason": "not part of this run (variant not built or provider not started)"})
            continue
        rows.append(measure(by_name[name], texts, deadline=deadline))
    return rows
