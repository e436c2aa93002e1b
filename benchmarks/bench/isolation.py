"""Each configuration in its own process.

PyTorch's OpenMP pool and ONNX Runtime's thread pools interfere when they share a process on a
small machine (one's idle spinning or sleeping workers delay the other's), and a fresh process is
what a user's service looks like. The parent runs one worker per configuration, one after the
other; the worker rebuilds the same inputs and candidate list, measures its one configuration with
the in-process harness, and hands back a JSON fragment (rows, config record, fidelity vectors).

    python -m onnxformer.benchmarks.isolation SPEC.json   # written and run by the parent

A peer whose stack needs its own virtual environment (peers.py: ``script`` + ``environment``) runs as its
script under that environment's Python instead (run_in_environment, protocol in peer_common.py): it imports
nothing of onnxformer, gets the same feeds and texts as files, and hands back raw per-call seconds and its
outputs, which are summarised here exactly as the in-process harness summarises its own.
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

from onnxformer.artifact.files import atomic_write_json
from onnxformer.errors import ArtifactError


def run_isolated(directory: Path, settings: Any, name: str, peer_workdir: Path | None) -> dict[str, Any]:
    """Measure configuration ``name`` in a child process; returns its fragment (failed config if it died)."""
    from onnxformer.benchmarks.peers import find_peer

    peer = find_peer(name)
    if peer is not None and peer.script is not None:
        return run_in_environment(peer, directory, settings, name, peer_workdir)
    with tempfile.TemporaryDirectory(prefix="onnxformer-bench-worker-") as tmp:
        spec = {"directory": str(directory), "settings": dataclasses.asdict(settings), "candidate": name,
                "peer_workdir": str(peer_workdir) if peer_workdir else None, "out": str(Path(tmp) / "fragment.json")}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        with open(Path(tmp) / "stderr.txt", "w+") as err:
            code, tail = _wait([sys.executable, "-m", "onnxformer.benchmarks.isolation", str(spec_path)], err)
        out = Path(str(spec["out"]))
        if out.is_file():
            return json.loads(out.read_text())
        return _failed(name, f"worker process exited with {code}: {tail}", code)


def _wait(cmd: list[str], err: Any, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``cmd`` to its end (stderr into ``err``); its exit status and last line of error output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: let it write what it measured
        code = proc.wait()
    err.seek(0)
    tail = [line for line in err.read().strip().splitlines() if line.strip()][-1:]
    return code, tail[0] if tail else "no error output"


def _failed(name: str, reason: str, code: int) -> dict[str, Any]:
    return {"configs": [{"name": name, "status": "failed", "reason": reason}], "results": [], "signatures": {},
            "interrupted": code in (130, -2)}


def run_in_environment(peer: Any, directory: Path, settings: Any, name: str, peer_workdir: Path | None,
                       heldout: list[str] | None = None) -> dict[str, Any]:
    """Measure script peer ``peer`` (peers.Peer) as ``name`` under its environment's Python; its fragment.
    ``heldout``: texts whose end-to-end outputs come back too (fragment["heldout"]: "batched", "solo")."""
    import os

    from onnxformer.artifact.manifest import Manifest
    from onnxformer.benchmarks import measure
    from onnxformer.benchmarks.availability import script_spec
    from onnxformer.benchmarks.environment import LIBRARIES
    from onnxformer.benchmarks.peer_env import ensure
    from onnxformer.benchmarks.runners import ArtifactContext

    ctx = ArtifactContext(directory, Manifest.load(directory), settings.threads, max(settings.batches))
    shapes, _ = measure.shapes(ctx, settings)
    python = ensure(peer.environment)  # made (or found) when the candidates were listed
    with tempfile.TemporaryDirectory(prefix="onnxformer-bench-peer-") as tmp:
        scratch = Path(tmp)
        spec = script_spec(ctx, peer.precision, peer_workdir or scratch, scratch)
        spec.update(out=str(scratch / "result.json"), budget=dataclasses.asdict(settings.budget),
                    libraries=[*LIBRARIES, "openvino", "nncf"], shapes=[], heldout=heldout,
                    heldout_out=str(scratch / "heldout.npz"))
        for i, inputs in enumerate(shapes):
            feeds: dict[str, Any] = dict(inputs.feeds)
            np.savez(scratch / f"feeds-{i}.npz", **feeds)
            spec["shapes"].append({"batch": inputs.batch, "seq": inputs.seq, "texts": inputs.texts,
                                   "feeds": str(scratch / f"feeds-{i}.npz"),
                                   "outputs": str(scratch / f"outputs-{i}.npz")})
        (scratch / "spec.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        with open(scratch / "stderr.txt", "w+") as err:
            load_average = os.getloadavg()[0]
            script = Path(__file__).parent / peer.script  # a bare name: one of ours next to this file
            code, tail = _wait([str(python), str(script), str(scratch / "spec.json")], err, env)
        if not Path(spec["out"]).is_file():
            return _failed(name, f"{peer.script} exited with {code} in the {peer.environment.name} environment: {tail}",
                           code)
        fragment = _fragment(name, json.loads(Path(spec["out"]).read_text()), shapes, spec, ctx, load_average)
        if heldout:
            with np.load(spec["heldout_out"]) as z:
                fragment["heldout"] = {k: z[k] for k in z.files}
        return fragment


def _fragment(name: str, result: dict[str, Any], shapes: list[Any], spec: dict[str, Any], ctx: Any,
              load_average: float) -> dict[str, Any]:
    """A script peer's raw result as the fragment the in-process harness would have made (measure.load/probe)."""
    from onnxformer.benchmarks.postprocess import signature
    from onnxformer.benchmarks.stats import summarize

    size_mb = result["size_bytes"] / 1e6
    config = {"name": name, "status": "ok", "reason": None, "load_average_1m": load_average,
              "load_seconds": result["load_seconds"], "load_peak_over_base_mb": result["load_peak_over_base_mb"],
              "resident_mb": result["resident_mb"], "size_mb": size_mb, "libraries": result["libraries"]}
    rows, signatures = [], {}
    for inputs, shape, files in zip(shapes, result["shapes"], spec["shapes"]):
        with np.load(files["outputs"]) as z:
            outputs = {k: z[k] for k in z.files}
        signatures[f"{name}|{inputs.batch}|{inputs.seq}"] = signature(
            outputs, inputs.feeds["attention_mask"], ctx.task, ctx.post).tolist()
        rows.append({"config": name, "batch": inputs.batch, "seq": inputs.seq,
                     "peak_rss_over_base_mb": result["resident_mb"] + shape["run_peak_over_steady_mb"],
                     "run_peak_over_steady_mb": shape["run_peak_over_steady_mb"], "gpu_memory_mb": None,
                     "size_mb": size_mb,
                     "model_only": summarize(np.asarray(shape["model_only_s"]), inputs.batch, inputs.seq),
                     "end_to_end": summarize(np.asarray(shape["end_to_end_s"]), inputs.batch, inputs.seq)})
    return {"configs": [config], "results": rows, "signatures": signatures, "interrupted": False}


def fragment_signatures(fragment: dict[str, Any]) -> dict[tuple[str, int, int], np.ndarray]:
    out = {}
    for key, rows in fragment["signatures"].items():
        name, batch, seq = key.rsplit("|", 2)
        out[(name, int(batch), int(seq))] = np.asarray(rows, dtype=np.float64)
    return out


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from onnxformer.benchmarks import measure
    from onnxformer.benchmarks.peers import PYTORCH, find_peer, work_directory
    from onnxformer.benchmarks.runners import ArtifactContext
    from onnxformer.benchmarks.stats import Budget

    peer = find_peer(spec["candidate"])
    raw = dict(spec["settings"], budget=Budget(**spec["settings"]["budget"]), isolate=False)
    # Only this configuration's kind is listed: the others' checks (a peer environment, PyTorch) are not repeated.
    raw.update(peers=raw["peers"] if peer is not None and peer.kind != PYTORCH else (),
               baselines=raw["baselines"] and peer is not None and peer.kind == PYTORCH)
    settings = measure.Settings(**raw)
    directory = Path(spec["directory"])
    manifest, providers = measure.preflight(directory, settings)
    ctx = ArtifactContext(directory, manifest, settings.threads, max(settings.batches))
    shapes, _ = measure.shapes(ctx, settings)
    report: dict[str, Any] = {"configs": [], "results": [], "interrupted": False}
    signatures: dict[tuple[str, int, int], np.ndarray] = {}
    with work_directory(spec["peer_workdir"]) as workdir:  # the parent's: what its peers prepared is reused
        chosen = [c for c in measure.candidates(ctx, settings, providers, workdir) if c.name == spec["candidate"]]
        if not chosen:
            raise ArtifactError(f"no configuration named {spec['candidate']!r} for {directory}")
        try:
            measure.measure_all(chosen, shapes, settings.budget, ctx, report, signatures, lambda *_: None)
        except KeyboardInterrupt:
            report["interrupted"] = True
    return {"configs": report["configs"], "results": report["results"], "interrupted": report["interrupted"],
            "signatures": {f"{n}|{b}|{s}": v.tolist() for (n, b, s), v in signatures.items()}}


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    atomic_write_json(spec["out"], worker(spec))
