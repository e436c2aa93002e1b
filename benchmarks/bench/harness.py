"""The benchmark matrix: every candidate × every (batch, seq), timed, measured and compared.

Candidates are loaded one at a time (each load's memory measured on its own), then every shape is
timed with all of them in interleaved rounds, so load from other jobs on a shared machine hits
every configuration alike. Fidelity and speedups are computed after the loop, so a Ctrl-C at any
point still yields a consistent (partial) report.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from onnxformer.artifact.manifest import Manifest
from onnxformer.benchmarks import measure, memory
from onnxformer.benchmarks.environment import environment
from onnxformer.benchmarks.measure import Progress, Settings
from onnxformer.benchmarks.peers import work_directory
from onnxformer.benchmarks.runners import ArtifactContext, Candidate
from onnxformer.benchmarks.summary import add_comparisons

SCHEMA = "onnxformer-bench/1"


def run_benchmark(directory: str | Path, settings: Settings, progress: Progress = lambda *_: None) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the report dict (raw floats, JSON-ready)."""
    directory = Path(directory)
    manifest, providers = measure.preflight(directory, settings)
    ctx = ArtifactContext(directory, manifest, settings.threads, max(settings.batches))
    env = environment()
    report = _skeleton(directory, manifest, settings, providers, env)
    shapes, report["skipped_shapes"] = measure.shapes(ctx, settings)
    signatures: dict[tuple[str, int, int], np.ndarray] = {}
    with work_directory() as workdir:  # what peers build (optimum's export), removed after the run
        candidates = measure.candidates(ctx, settings, providers, workdir)
        try:
            if settings.isolate:
                _measure_isolated(candidates, directory, settings, report, signatures, workdir, progress)
            else:
                measure.measure_all([c for c in candidates if not c.own_process], shapes, settings.budget, ctx, report,
                             signatures, progress)
                _measure_isolated([c for c in candidates if c.own_process], directory, settings, report, signatures,
                                  workdir, progress)
        except KeyboardInterrupt:
            report["interrupted"] = True  # keep what was measured; the caller writes it
    report["load_average_1m_end"] = os.getloadavg()[0]
    measure.add_fidelity(report, signatures)
    add_comparisons(report)
    return report




def _skeleton(directory: Path, manifest: Manifest, settings: Settings, providers: list[str],
              env: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": {"directory": str(directory), "name": manifest.name, "task": manifest.task,
                     "architecture": manifest.architecture.to_json(), "source": manifest.source_path,
                     "postprocess": manifest.postprocess.to_json()},
        "settings": {"batches": settings.batches, "seqs": settings.seqs, "threads": settings.threads,
                     "warmup": settings.budget.warmup, "iters": settings.budget.iters,
                     "seconds": settings.budget.seconds, "providers": providers,
                     "variants": settings.variants or list(manifest.variants), "isolate": settings.isolate},
        "memory_method": memory.METHOD,
        "load_average_1m_start": os.getloadavg()[0],  # > core count: other jobs competed for the CPU
        "environment": env,
        "configs": [],
        "results": [],
        "interrupted": False,
    }
















def _measure_isolated(candidates: list[Candidate], directory: Path, settings: Settings, report: dict[str, Any],
                      signatures: dict, workdir: Path, progress: Progress) -> None:
    """One child process per configuration, one after the other (see isolation.py)."""
    from onnxformer.benchmarks.isolation import fragment_signatures, run_isolated

    if not candidates:  # nothing of its own to report (not a "0/0 done" after the in-process part's "9/9 done")
        return
    for i, cand in enumerate(candidates):
        if cand.load is None:
            report["configs"].append({"name": cand.name, "kind": cand.kind, "device": cand.device,
                                      "precision": cand.precision, "status": "unavailable", "reason": cand.reason})
            continue
        progress(i, len(candidates), f"{cand.name} (own process)")
        cand.prepare()  # e.g. optimum's export, made once here and shared with the worker through its directory
        fragment = run_isolated(directory, settings, cand.name, workdir)
        for config in fragment["configs"]:
            report["configs"].append({"kind": cand.kind, "device": cand.device, "precision": cand.precision, **config})
        report["results"] += fragment["results"]
        signatures.update(fragment_signatures(fragment))
        if fragment["interrupted"]:
            raise KeyboardInterrupt
    progress(len(candidates), len(candidates), "done")








