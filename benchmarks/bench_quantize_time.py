"""How long int8 takes to build: onnxformer's int8 (SmoothQuant + budget loop) against optimum's dynamic int8
(ORTQuantizer, its CPU preset) and ONNX Runtime's plain ``quantize_dynamic``, on the same checkpoint, one after
the other in one run (issue 15's bar: ours ≤ 3× optimum's time). Exports are not timed; each command is timed as a
whole process (interpreter and imports included, for all three alike).

    python benchmarks/bench_quantize_time.py [--model bert-base|minilm] [--work DIR] [--out results/quantize-time.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onnxformer.benchmarks.environment import cpu_info
from onnxformer.benchmarks.run_suite import checkpoint

ROOT = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def optimum_export(source: Path, out: Path) -> None:
    import optimum.onnxruntime as ort_optimum

    ort_optimum.ORTModelForFeatureExtraction.from_pretrained(source, export=True).save_pretrained(out / "fp32")


def optimum_int8(out: Path) -> None:
    """optimum's documented CPU recipe: ORTQuantizer with the CPU's preset, on its own export."""
    import optimum.onnxruntime as ort_optimum
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    factory = AutoQuantizationConfig.avx512_vnni if cpu_info()["flags"]["avx512_vnni"] else AutoQuantizationConfig.avx2
    ort_optimum.ORTQuantizer.from_pretrained(out / "fp32").quantize(factory(is_static=False, per_channel=False),
                                                                    save_dir=out / "int8")


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
    subprocess.run([*cli, "export", str(ckpt), "--out", str(art), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = {"onnxformer int8 (fp32-opt + SmoothQuant + budget)": timed([*cli, "quantize", str(art), "--precision", "int8"])}
    code = ("import sys; from pathlib import Path; sys.path.insert(0, %r); import bench_quantize_time as b; "
            "b.optimum_%s(*map(Path, sys.argv[1:]))")
    opt = work / "optimum"
    shutil.rmtree(opt, ignore_errors=True)
    subprocess.run([sys.executable, "-c", code % (str(ROOT), "export"), str(ckpt), str(opt)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # untimed, like our export
    times["optimum dynamic int8 (ORTQuantizer)"] = timed([sys.executable, "-c", code % (str(ROOT), "int8"), str(opt)])
    plain = ("import sys; from onnxruntime.quantization import quantize_dynamic, QuantType; "
             "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)")
    times["onnxruntime quantize_dynamic (fp32 graph given)"] = timed(
        [sys.executable, "-c", plain, str(art / "fp32" / "model.onnx"), str(work / "plain-int8.onnx")])
    ours, theirs = times["onnxformer int8 (fp32-opt + SmoothQuant + budget)"], times["optimum dynamic int8 (ORTQuantizer)"]
    report = {"model": args.model, "cpu": cpu_info(), "seconds": {k: round(v, 1) for k, v in times.items()},
              "ours_over_optimum": round(ours / theirs, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
