"""Export time and max |Δ| vs PyTorch per encoder family, and the runtime's import time.

    .venv/bin/python benchmarks/bench_export.py   # writes benchmarks/results/export.{json,md}

Families are exported as tiny random checkpoints (2 layers, 32 wide) plus the real all-MiniLM-L6-v2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from devkit.checkpoints import make_tiny_checkpoint, minilm_path
from onnxformer.artifact.families import ENCODER, names
from onnxformer.export import export_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def import_time(module: str, repeats: int = 5) -> float:
    """Median wall time of `import module` in a fresh interpreter (seconds)."""
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    runs = sorted(float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats))
    return runs[len(runs) // 2]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = [(f, "tiny-random", make_tiny_checkpoint(tmp / f"ckpt-{f}", f)) for f in names(ENCODER)]
        sources.append(("bert (all-MiniLM-L6-v2)", "real", minilm_path()))
        for family, kind, ckpt in sources:
            res = export_checkpoint(str(ckpt), tmp / f"out-{len(rows)}")
            rows.append({"family": family, "weights": kind, "export_seconds": res.seconds,
                         "max_abs_diff": max(res.manifest.validation["max_abs_diff"].values()),
                         "opset": res.manifest.opset})
            print(f"{family:28s} {kind:12s} {res.seconds:6.2f}s  max|Δ| {rows[-1]['max_abs_diff']:.2e}")
    result = {"families": rows, "import_seconds": {"onnxformer.runtime": import_time("onnxformer.runtime")}}
    print(f"import onnxformer.runtime: {result['import_seconds']['onnxformer.runtime'] * 1000:.0f} ms (median of 5)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| family | weights | export (s) | max abs diff vs PyTorch | opset |", "|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['weights']} | {r['export_seconds']:.2f} | {r['max_abs_diff']:.2e} | {r['opset']} |"
              for r in rows]
    ms = result["import_seconds"]["onnxformer.runtime"] * 1000
    lines += ["", f"`import onnxformer.runtime`: {ms:.0f} ms (median of 5 fresh interpreters)"]
    (RESULTS / "export.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
