"""Each configuration in its own process.

PyTorch's OpenMP pool and ONNX Runtime's thread pools interfere when they share a process on a
small machine (one's idle spinning or sleeping workers delay the other's), and a fresh process is
what a user's service looks like. The parent runs one worker per configuration, one after the
other; the worker rebuilds the same inputs and candidate list, measures its one configuration with
the in-process harness, and hands back a JSON fragment (rows, config record, fidelity vectors).

    python -m onnxformer.benchmarks.isolation SPEC.json   # written and run by the parent
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxformer.errors import ArtifactError
from onnxformer.runtime.files import atomic_write_json


def run_isolated(directory: Path, settings: Any, name: str, peer_workdir: Path | None) -> dict[str, Any]:
    """Measure configuration ``name`` in a child process; returns its fragment (failed config if it died)."""
    with tempfile.TemporaryDirectory(prefix="onnxformer-bench-worker-") as tmp:
        spec = {"directory": str(directory), "settings": dataclasses.asdict(settings), "candidate": name,
                "peer_workdir": str(peer_workdir) if peer_workdir else None, "out": str(Path(tmp) / "fragment.json")}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        with open(Path(tmp) / "stderr.txt", "w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", "onnxformer.benchmarks.isolation", str(spec_path)],
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                code = proc.wait()
            except KeyboardInterrupt:  # the worker got the same Ctrl-C: let it write what it measured
                code = proc.wait()
            err.seek(0)
            tail = [line for line in err.read().strip().splitlines() if line.strip()][-1:]
        out = Path(spec["out"])
        if out.is_file():
            return json.loads(out.read_text())
        reason = f"worker process exited with {code}: {tail[0] if tail else 'no error output'}"
        return {"configs": [{"name": name, "status": "failed", "reason": reason}], "results": [], "signatures": {},
                "interrupted": code in (130, -2)}


def fragment_signatures(fragment: dict[str, Any]) -> dict[tuple[str, int, int], np.ndarray]:
    out = {}
    for key, rows in fragment["signatures"].items():
        name, batch, seq = key.rsplit("|", 2)
        out[(name, int(batch), int(seq))] = np.asarray(rows, dtype=np.float64)
    return out


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from onnxformer.benchmarks import harness
    from onnxformer.benchmarks.peers import work_directory
    from onnxformer.benchmarks.stats import Budget

    raw = dict(spec["settings"], budget=Budget(**spec["settings"]["budget"]), isolate=False)
    settings = harness.Settings(**raw)
    directory = Path(spec["directory"])
    manifest, providers = harness.preflight(directory, settings)
    ctx = harness.ArtifactContext(directory, manifest, settings.threads, max(settings.batches))
    shapes, _ = harness._shapes(ctx, settings)
    report: dict[str, Any] = {"configs": [], "results": [], "interrupted": False}
    signatures: dict[tuple[str, int, int], np.ndarray] = {}
    with work_directory(spec["peer_workdir"]) as workdir:  # the parent's: what its peers prepared is reused
        chosen = [c for c in harness._candidates(ctx, settings, providers, workdir) if c.name == spec["candidate"]]
        if not chosen:
            raise ArtifactError(f"no configuration named {spec['candidate']!r} for {directory}")
        try:
            harness._measure_all(chosen, shapes, settings.budget, ctx, report, signatures, lambda *_: None)
        except KeyboardInterrupt:
            report["interrupted"] = True
    return {"configs": report["configs"], "results": report["results"], "interrupted": report["interrupted"],
            "signatures": {f"{n}|{b}|{s}": v.tolist() for (n, b, s), v in signatures.items()}}


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    atomic_write_json(spec["out"], worker(spec))
