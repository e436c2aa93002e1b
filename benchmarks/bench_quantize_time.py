"""How long int8 takes to build: onnxformer's int8 (SmoothQuant + budget loop) against optimum's dynamic int8
(ORTQuantizer, its CPU preset; in the optimum peer environment, peer_env.py) and ONNX Runtime's plain
``quantize_dynamic``, on the same checkpoint, one after the other in one run (issue 15's bar: ours ≤ 3× optimum's
time). Exports are not timed; each command is timed as a whole process (interpreter and imports included, for all
three alike).

    python benchmarks/bench_quantize_time.py [--model bert-base|minilm] [--work DIR] [--out results/quantize-time.json]

``--stage int8`` (issue 26): the int8 stage alone, as ``make demo`` runs it (fp32-opt already made, untimed): our
``onnxformer quantize --precision int8`` against ``quantize_dynamic`` of the same fp32-opt graph, alternated
``--rounds`` times in one run, with the fidelity each of ours recorded; ``--before-src DIR`` adds an earlier checkout
of onnxformer (run with this environment's packages) to the alternation, for a before/after in one run.

    python benchmarks/bench_quantize_time.py --stage int8 --model minilm [--before-src DIR] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run_suite import checkpoint

from onnxformer.artifact.files import atomic_write_json
from onnxformer.artifact.timing import timed
from onnxformer.benchmarks.environment import cpu_info

ROOT = Path(__file__).resolve().parent


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _optimum(precision: str, artifact: Path, workdir: Path) -> list[str]:
    """A process running the optimum peer's own build (peer_optimum.py, prepare only) in its environment."""
    from onnxformer.artifact.manifest import Manifest
    from onnxformer.benchmarks.availability import script_spec
    from onnxformer.benchmarks.peer_env import ensure
    from onnxformer.benchmarks.peers import OPTIMUM_ENV
    from onnxformer.benchmarks.runners import ArtifactContext

    workdir.mkdir(parents=True, exist_ok=True)
    spec = script_spec(ArtifactContext(artifact, Manifest.load(artifact), 1, 1), precision, workdir, workdir)
    path = workdir / f"spec-{precision}.json"
    path.write_text(json.dumps({**spec, "prepare_only": True}))
    return [str(ensure(OPTIMUM_ENV)), str(ROOT / "peer_optimum.py"), str(path)]


# Runs `python -m onnxformer` from another checkout: the editable install's folder mapping pointed at it.
_ELSEWHERE = """import runpy, sys
import __editable___onnxformer_0_1_0_finder as finder
for name, folder in finder.MAPPING.items():
    finder.MAPPING[name] = folder.replace({here!r}, {there!r})
sys.argv = ["onnxformer", *sys.argv[1:]]
runpy.run_module("onnxformer", run_name="__main__")
"""


def _int8_stage(art: Path, work: Path, rounds: int, before: Path | None, out: Path) -> None:
    """Ours (and ``before``'s) int8 stage against plain quantize_dynamic of the same graph, alternated."""
    cli = {"ours": [sys.executable, "-m", "onnxformer"]}
    if before is not None:
        launcher = work / "before.py"
        launcher.write_text(_ELSEWHERE.format(here=str(ROOT.parent), there=str(before.resolve())))
        cli = {"before": [sys.executable, str(launcher)], **cli}
    plain = ("import sys; from onnxruntime.quantization import quantize_dynamic, QuantType; "
             "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)")
    fused = art / "fp32-opt" / "model.onnx"
    times: dict[str, list[float]] = {"quantize_dynamic": [], **{name: [] for name in cli}}
    fidelity: dict[str, list[dict]] = {name: [] for name in cli}
    for _ in range(rounds):
        times["quantize_dynamic"].append(timed(lambda: _run(
            [sys.executable, "-c", plain, str(fused), str(work / "plain-int8.onnx")]))[0])
        for name, command in cli.items():
            copy = work / f"artifact-{name}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(art, copy)
            times[name].append(timed(lambda: _run([*command, "quantize", str(copy), "--precision", "int8"]))[0])
            variant = json.loads((copy / "manifest.json").read_text())["variants"]["int8"]
            fidelity[name].append({**{k: v for k, v in variant["fidelity"].items() if k != "reference"},
                                   "excluded_nodes": variant["made_by"]["budget"]["excluded_nodes"],
                                   "smoothing": variant["made_by"].get("smoothing", {}).get("method")})
    best = {name: min(t) for name, t in times.items()}
    report = {"stage": "int8 (fp32-opt made beforehand, untimed)", "cpu": cpu_info(), "rounds": rounds,
              **({"before_commit": _commit(before)} if before is not None else {}),
              "seconds": {name: [round(t, 1) for t in ts] for name, ts in times.items()},
              "over_quantize_dynamic": {name: round(best[name] / best["quantize_dynamic"], 1) for name in cli},
              "fidelity": fidelity,
              "note": "each a whole process (interpreter and imports included), alternated in one run; ours includes "
                      "the side-by-side CPU latency record every CPU variant gets"}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    print(json.dumps(report, indent=1))


def _commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bert-base", choices=["bert-base", "minilm"])
    p.add_argument("--stage", choices=["int8"], help="time one stage alone (see the module's docstring)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--before-src", type=Path, help="an earlier onnxformer checkout to alternate with (--stage)")
    p.add_argument("--work", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-qtime-"))
    ckpt = checkpoint(args.model, work)
    art = work / "artifact"
    cli = [sys.executable, "-m", "onnxformer"]
    _run([*cli, "export", str(ckpt), "--out", str(art), "--overwrite"])
    if args.stage == "int8":
        _run([*cli, "optimize", str(art)])
        out = args.out or ROOT / "results" / f"quantize-time-int8-{args.model}.json"
        _int8_stage(art, work, args.rounds, args.before_src, out)
        return
    args.out = args.out or ROOT / "results" / "quantize-time.json"
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
