"""The peers' own virtual environments: made on demand with pip, cached per machine, built atomically.

optimum (and sentence-transformers' ONNX backend, which exports through it) pins transformers<4.58 while the
project runs transformers 5; OpenVINO's NNCF brings its own pins (scipy, scikit-learn, networkx, ...). Neither
may change the project's environment, so each such peer names a ``PeerEnv`` and runs its script
(peer_optimum.py, peer_openvino.py) with that environment's Python.

An environment lives in ``$XDG_CACHE_HOME/onnxformer/peer-envs/<name>-<hash>`` (``~/.cache`` without the variable;
``ONNXFORMER_PEER_ENVS`` overrides the folder). The hash covers the requirements, the pins taken from the running
environment and the Python version, so a changed requirement builds a new one beside the old. pip installs
with ``torch`` and ``onnxruntime`` constrained to the exact versions installed here (torch's local build label
included, e.g. ``2.13.0+cpu``: pip takes that CPU wheel or fails, it never swaps in a CUDA build). pip's own
settings apply (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``; e.g. https://download.pytorch.org/whl/cpu for a CPU
torch on a machine without it). It is built in a temporary sibling folder and renamed into place once pip
succeeds; a failed or interrupted build leaves nothing that counts.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from onnxformer.errors import OnnxformerError

PINNED = ("torch", "onnxruntime")  # constrained to this environment's versions in every peer environment
COMPLETE = "onnxformer-peer-env.json"  # written last inside a built environment: what it was built from


class PeerEnvError(OnnxformerError):
    """A peer's environment cannot be made here; its peers are reported as not measured, with this message."""


@dataclass(frozen=True)
class PeerEnv:
    name: str  # "optimum", "openvino": the folder's prefix and the "not measured: NAME — ..." label
    requirements: tuple[str, ...]  # pip requirement specifiers
    size_gb: float | None = None  # about what the built environment takes on disk (said before building it)

    def cost(self) -> str:
        """What using this environment costs now: nothing more when built, else the build (said before it starts)."""
        path = self.path()
        if (path / COMPLETE).is_file():
            return f"reuses {path}"
        size = f"about {self.size_gb:g} GB, " if self.size_gb else ""
        return f"first builds {path} ({size}minutes of pip; once per machine)"

    def constraints(self) -> list[str]:
        """``PINNED`` distributions at the versions installed here; one the requirements name must be installed."""
        out = []
        named = {_dist_name(r) for r in self.requirements}
        for dist in PINNED:
            try:
                out.append(f"{dist}=={metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                if dist in named:
                    raise PeerEnvError(f"it needs {dist}, pinned to this environment's version, and {dist} is not "
                                       "installed here (pip install 'onnxformer[export]')") from None
        return out

    def path(self) -> Path:
        key = json.dumps([list(self.requirements), self.constraints(), platform.python_version()])
        return root() / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def python(self) -> Path:
        return self.path() / "bin" / "python"


def root() -> Path:
    if os.environ.get("ONNXFORMER_PEER_ENVS"):
        return Path(os.environ["ONNXFORMER_PEER_ENVS"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "onnxformer" / "peer-envs"


_FAILED: dict[Path, PeerEnvError] = {}  # one pip attempt per environment per process


def ensure(env: PeerEnv) -> Path:
    """The Python of ``env``'s environment, built first when missing (minutes, once per machine)."""
    path = env.path()
    if (path / COMPLETE).is_file():
        return env.python()
    if path in _FAILED:
        raise _FAILED[path]
    start = time.monotonic()
    try:
        _build(env, path)
    except PeerEnvError as e:
        _FAILED[path] = e
        print(f"not measured: {env.name} — {e}", file=sys.stderr)
        raise
    print(f"made the {env.name} peer environment in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return env.python()


def _build(env: PeerEnv, path: Path) -> None:
    constraints = env.constraints()
    path.parent.mkdir(parents=True, exist_ok=True)
    size = f"about {env.size_gb:g} GB, " if env.size_gb else ""
    print(f"creating the {env.name} peer environment in {path} ({size}minutes; once per machine)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        # No pip inside: this environment's pip installs into it (--python), so building starts in a second.
        # Only ever run as bin/python, so the build folder's name in the venv's scripts does not matter.
        _run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], "python -m venv")
        pins = tmp / "constraints.txt"
        pins.write_text("".join(f"{c}\n" for c in constraints))
        _run([sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "--quiet",
              "--disable-pip-version-check", "-c", str(pins), *env.requirements], "pip install")
        (tmp / COMPLETE).write_text(json.dumps({"requirements": list(env.requirements), "constraints": constraints,
                                                "python": platform.python_version()}, indent=1))
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first: keep its environment
            if not (path / COMPLETE).is_file():
                raise PeerEnvError(f"cannot move the built environment to {path}; remove that folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise PeerEnvError(f"{what} failed ({lines[-1] if lines else f'exit {done.returncode}'}); "
                           "the peer needs PyPI (or pip's PIP_INDEX_URL) to build its environment")


def _dist_name(requirement: str) -> str:
    for i, ch in enumerate(requirement):
        if not (ch.isalnum() or ch in "-_."):
            return requirement[:i].lower()
    return requirement.lower()
