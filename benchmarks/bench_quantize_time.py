"""How long int8 takes to build: onnxformer's int8 (SmoothQuant + budget loop) against optimum's dynamic int8
(ORTQuantizer, its CPU preset; in the optimum peer environment, peer_env.py) and ONNX Runtime's plain
``quantize_dynamic``, on the same checkpoint, one after the other in one run (issue 15's bar: ours ≤ 3× optimum's
time). Exports are not timed; each command is timed as a whole process (interpreter and imports included, for all
three alike).

    python benchmarks/bench_quantize_time.py [--model bert-base|minilm] [--work DIR] [--out results/quantize-time.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from onnxformer.benchmarks.environment import cpu_info
from run_suite import checkpoint
from onnxformer.artifact.files import atomic_write_json
from onnxformer.artifact.timing import timed

ROOT = Path(__file__).resolve().parent


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _optimum(precision: str, artifact: Path, workdir: Path) -> list[str]:
    """A process running the optimum peer's own build (peer_optimum.py, prepare only) in its environment."""
    from onnxformer.benchmarks.availability import script_spec
    from onnxformer.benchmarks.peer_env import ensure
    from onnxformer.benchmarks.peers import OPTIMUM_ENV
    from onnxformer.benchmarks.runners import ArtifactContext
    from onnxformer.artifact.manifest import Manifest

    workdir.mkdir(parents=True, exist_ok=True)
    spec = script_spec(ArtifactContext(artifact, Manifest.load(artifact), 1, 1), precision, workdir, workdir)
    path = workdir / f"spec-{precision}.json"
    path.write_text(json.dumps({**spec, "prepare_only": True}))
    return [str(ensure(OPTIMUM_ENV)), str(ROOT / "peer_optimum.py"), str(path)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bert-base", choices=["bert-base", "minilm"])
    p.add_argument("--work", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "quantize-time.json")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-qtime-"))
    ckpt = checkpoint(args.model, work)
    art = work / "artifact"
    cli = [sys.executable, "-m", "onnxformer"]
    _run([*cli, "export", str(ckpt), "--out", str(art), "--overwrite"])
    times = {"onnxformer int8 (fp32-opt + SmoothQuant + budget)":
             timed(lambda: _run([*cli, "quantize", str(art), "--precision", "int8"]))[0]}
    opt = work / "optimum"
    shutil.rmtree(opt, ignore_errors=True)
    _run(_optimum("fp32", art, opt))  # its export, untimed like ours
    int8 = _optimum("int8", art, opt)  # the command (and its spec) made before the clock starts
    times["optimum dynamic int8 (ORTQuantizer)"] = timed(lambda: _run(int8))[0]
    plain = ("import sys; from onnxruntime.quantization import quantize_dynamic, QuantType; "
             "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)")
    times["onnxruntime quantize_dynamic (fp32 graph given)"] = timed(lambda: _run(
        [sys.executable, "-c", plain, str(art / "fp32" / "model.onnx"), str(work / "plain-int8.onnx")]))[0]
    ours, theirs = times["onnxformer int8 (fp32-opt + SmoothQuant + budget)"], times["optimum dynamic int8 (ORTQuantizer)"]
    report = {"model": args.model, "cpu": cpu_info(), "seconds": {k: round(v, 1) for k, v in times.items()},
              "ours_over_optimum": round(ours / theirs, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
