"""Measured variant latency: the probe both the quantize stage and the loader time, and the at-load measurement.

The quantize stage records each CPU variant's latency with the CPU it ran on (``Variant.latency``). On a CPU of
another kind the loader measures the eligible variants itself — about ``AT_LOAD_SECONDS`` of timed calls in
all — and caches the result beside the artifact's identity (the sha256 of its variants) in the user's cache
directory, so the next load on this CPU measures nothing. ``Model.load(..., measure=False)`` turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from onnxformer.artifact.cpu import CpuInfo
from onnxformer.artifact.files import atomic_write_json
from onnxformer.artifact.manifest import Manifest, verify_variant
from onnxformer.artifact.timing import time_calls
from onnxformer.errors import ArtifactError
from onnxformer.runtime.external import check_external_data
from onnxformer.runtime.session import create_session

SEQUENCE = 128
MAX_RUNS = 30
AT_LOAD_SECONDS = 1.0  # timed calls at load, all variants together (session start-up not counted)


def probe_feeds(manifest: Manifest, sequence: int = SEQUENCE, batch: int = 1) -> dict[str, np.ndarray]:
    """``batch`` × ``sequence`` tokens (capped at the model's limit) of ordinary word ids, all attended."""
    length = min(sequence, manifest.max_length or sequence)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, min(20000, manifest.architecture.vocab_size or 20000), (batch, length))
    available = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: available[name].astype(np.int64) for name in manifest.input_names}


def interleaved_ms(paths: dict[str, Path], feeds: dict[str, np.ndarray], threads: int | None, seconds: float,
                   rounds: int = 2) -> dict[str, float]:
    """Median ms per call of each graph, timed in ``rounds`` interleaved rounds (the best round counts, so that
    a burst of load on a shared machine hurts every graph alike) within about ``seconds`` in all (3 to
    ``MAX_RUNS`` calls per graph and round)."""
    sessions = {name: create_session(path, threads=threads) for name, path in paths.items()}
    share = seconds / max(1, len(sessions) * rounds)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, session in sessions.items():
            feed = {i.name: feeds[i.name] for i in session.get_inputs() if i.name in feeds}
            first = time_calls(lambda: session.run(None, feed), runs=1, warmup=1)[0]
            runs = int(min(MAX_RUNS, max(3, share / max(first, 1e-6))))
            ms = float(np.median(time_calls(lambda: session.run(None, feed), runs=runs, warmup=0)) * 1e3)
            best[name] = min(ms, best.get(name, ms))
    return best


def cache_root() -> Path:
    root = os.environ.get("ONNXFORMER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "onnxformer")
    return Path(root) / "latency"


def artifact_key(manifest: Manifest) -> str:
    """The artifact's identity: the sha256 of its variants' graph hashes."""
    text = "\n".join(f"{name}:{v.sha256}" for name, v in sorted(manifest.variants.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def at_load(directory: Path, manifest: Manifest, names: Sequence[str], cpu: CpuInfo, threads: int | None = None,
            seconds: float = AT_LOAD_SECONDS, cache: Path | None = None,
            broken: dict[str, str] | None = None) -> dict[str, float]:
    """Latency (ms, batch 1 × 128) of each of ``names`` on this CPU: from the cache, else measured and cached.
    ``broken``: a variant whose files fail verification is recorded there (name → why) and left unmeasured,
    instead of raising."""
    path = (cache or cache_root()) / f"{artifact_key(manifest)}.json"
    key = f"{cpu.key} threads={threads or 'auto'}"
    cached = _read(path)
    known = cached.get(key, {})
    if all(isinstance(known.get(n), (int, float)) for n in names):
        return {n: float(known[n]) for n in names}
    graphs = {}
    for name in names:  # sha256 and external data checked before ONNX Runtime is handed a file
        try:
            graphs[name] = verify_variant(directory, manifest, name)
            check_external_data(directory, manifest.variants[name], graphs[name])
        except ArtifactError as e:
            if broken is None:
                raise
            broken[name] = str(e)
            graphs.pop(name, None)
    measured = interleaved_ms(graphs, probe_feeds(manifest), threads, seconds)
    cached[key] = {**known, **measured}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, cached)
    return measured


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: measure again
    return data if isinstance(data, dict) else {}
