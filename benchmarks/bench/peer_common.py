"""What the peer scripts share (peer_optimum.py, peer_openvino.py). They run in a peer's own virtual environment
(peer_env.py), so this module imports numpy and the standard library only, never onnxformer.

Protocol: the parent (isolation.run_in_environment) writes SPEC.json and runs ``<env python> peer_X.py SPEC.json``.
The script builds its model if the peers' work directory lacks it (untimed), loads it (timed, memory measured),
and for every shape makes one probe call (outputs saved for the fidelity comparison, peak memory), then times
model-only calls (the shape's feeds) and end-to-end calls (its texts: tokenize, run, post-process) under the
budget. It writes RESULT.json (per-call seconds, raw) atomically; the parent summarises it like any other
configuration. Memory is read like benchmarks/bench/memory.py reads it (Linux VmHWM, reset through clear_refs).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

Feeds = dict[str, np.ndarray]
MIN_ITERS = 5  # as benchmarks/bench/stats.py: a seconds budget still yields enough samples for a p90


@dataclass
class Loaded:
    model_only: Callable[[Feeds], dict[str, np.ndarray]]
    end_to_end: Callable[[list[str]], np.ndarray]
    size_bytes: float


def pool(states: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """runtime/pooling.pool restated for numpy-only peers (tests/test_peer_env.py checks they agree)."""
    m = mask[..., None].astype(states.dtype)
    if mode == "cls":
        return states[:, 0]
    if mode == "last":
        return states[np.arange(states.shape[0]), mask.sum(axis=1).astype(np.int64) - 1]
    if mode == "max":
        return np.where(m > 0, states, -1e9).max(axis=1)
    summed, counts = (states * m).sum(axis=1), np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len":
        return summed / np.sqrt(counts)
    raise ValueError(f"unknown pooling {mode!r}")


def finish(outputs: dict[str, np.ndarray], mask: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """What a user gets back: pooled (normalised) embeddings, or softmax/sigmoid of the logits."""
    if spec["pooled"]:
        x = pool(outputs["last_hidden_state"].astype(np.float32), mask, spec["pooling"] or "mean")
        return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None) if spec["normalize"] else x
    logits = outputs[sorted(outputs)[0]].astype(np.float32)
    if spec["activation"] == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def time_calls(fn: Callable[[], Any], budget: dict[str, Any]) -> list[float]:
    """Seconds per call after ``warmup`` untimed ones: ``iters`` calls, or ≥ MIN_ITERS for ``seconds``."""
    for _ in range(budget["warmup"]):
        fn()
    out: list[float] = []
    start = time.perf_counter()
    while not (len(out) >= budget["iters"] if budget["iters"] is not None else
               len(out) >= MIN_ITERS and time.perf_counter() - start >= (budget["seconds"] or 0.0)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not resettable here (memory.py says so in the report's method): the process peak so far
        pass


def main(prepare: Callable[[dict[str, Any]], None], load: Callable[[dict[str, Any]], Loaded]) -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    prepare(spec)
    if spec.get("prepare_only"):  # bench_quantize_time: the build alone, timed as a whole process
        return
    before = _kb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    loaded = load(spec)
    result: dict[str, Any] = {"load_seconds": time.perf_counter() - t0, "load_peak_over_base_mb": _kb("VmHWM") - before,
                              "resident_mb": _kb("VmRSS") - before, "size_bytes": loaded.size_bytes, "shapes": []}
    for shape in spec["shapes"]:
        with np.load(shape["feeds"]) as z:
            feeds = {k: z[k] for k in z.files}
        steady = _kb("VmRSS")
        _reset_peak()
        outputs = loaded.model_only(feeds)
        run_peak = max(0.0, _kb("VmHWM") - steady)
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in outputs.items()}
        np.savez(shape["outputs"], **arrays)
        texts = shape["texts"]
        result["shapes"].append({
            "batch": shape["batch"], "seq": shape["seq"], "run_peak_over_steady_mb": run_peak,
            "model_only_s": time_calls(lambda: loaded.model_only(feeds), spec["budget"]),
            "end_to_end_s": time_calls(lambda: loaded.end_to_end(texts), spec["budget"])})
    if spec.get("heldout"):  # fidelity texts (bench_heldout's), embedded as one batch and one text per call
        texts = spec["heldout"]
        np.savez(spec["heldout_out"], batched=loaded.end_to_end(texts),
                 solo=np.concatenate([loaded.end_to_end([t]) for t in texts]))
    result["libraries"] = _versions(spec.get("libraries", ()))
    tmp = Path(spec["out"] + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, spec["out"])


def _versions(names: list[str]) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def session_options(threads: int) -> Any:
    """ONNX Runtime session options as the benchmark's own variants get them (runtime/session.session_options):
    ``threads`` intra-op threads, one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so
