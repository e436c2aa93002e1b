"""SIGKILL during export, optimize, quantize and triton, at every file operation that publishes something
(the Nth rename/replace/link/copy of the command) and at a few timed moments, on fresh and existing targets.

After each kill: nothing half-written loads (every variant the manifest lists verifies and loads), every variant
that loaded before still loads, and the next run of the command succeeds and leaves no scratch, staging or
journal behind (saying how much it freed)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onnxformer.artifact.manifest import Manifest
from onnxformer.runtime import Model

pytestmark = pytest.mark.timeout(600)

# Runs one CLI command, SIGKILL-ing itself at the Nth publishing file operation (0: never; prints the count).
KILLER = r"""
import os, shutil, signal, sys
n, count = int(sys.argv[1]), [0]
def wrap(fn):
    def call(*a, **k):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return call
os.replace, os.rename, os.link, shutil.copyfile = map(wrap, (os.replace, os.rename, os.link, shutil.copyfile))
from onnxformer.cli import main
code = main(sys.argv[2:])
print("OPS", count[0], file=sys.stderr)
sys.exit(code)
"""


def _run(args: list[str], kill_at: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _ops(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stderr.rsplit("OPS", 1)[1].split()[0])


def _loadable(art: Path) -> set[str]:
    """Variants that load; a variant listed but not loadable is a half-written publish (fails the test)."""
    if not (art / "manifest.json").exists():
        return set()
    names = set(Manifest.load(art).variants)
    for name in names:
        Model.load(art, variant=name)  # raises on a half-written or mismatched file
    return names


def _leftovers(parent: Path) -> list[str]:
    return sorted(str(p.relative_to(parent)) for p in parent.rglob(".*")
                  if p.name.startswith((".quantize-", ".publish-pending", ".onnxformer-probe"))
                  or ".staging-" in p.name or ".old-" in p.name or p.name.endswith(".tmp"))


def _unreferenced_folders(art: Path) -> set[str]:
    m = Manifest.load(art)
    used = {rel.split("/", 1)[0] for v in m.variants.values() for rel in [v.file, *v.files] if "/" in rel}
    return {p.name for p in art.iterdir() if p.is_dir()} - used


def _moments(total: int, wanted: int) -> list[int]:
    """The last ``wanted`` operations (where files are published and the manifest swapped) and one mid-build."""
    return sorted({max(1, total - i) for i in range(wanted)} | {max(1, total // 2)})


def _campaign(art: Path, args: list[str], wanted: int) -> int:
    """Kill ``args`` at each chosen moment on a copy of ``art``; check loads after each kill and after a re-run."""
    clean = art.parent / f"{art.name}-pristine"
    shutil.copytree(art, clean)
    total = _ops(_run(args))  # a full run first: how many operations it makes
    kills = 0
    for n in _moments(total, wanted):
        shutil.rmtree(art)
        shutil.copytree(clean, art)
        before = _loadable(art)
        result = _run(args, kill_at=n)
        assert result.returncode == -signal.SIGKILL, (n, result.returncode, result.stderr[-1500:])
        kills += 1
        after = _loadable(art)
        assert before <= after, (n, before, after)  # every variant that loaded before still loads
        rerun = _run(args)
        assert rerun.returncode == 0, (n, rerun.stderr[-1500:])
        assert not _leftovers(art.parent), (n, _leftovers(art.parent))
        assert not _unreferenced_folders(art), (n, _unreferenced_folders(art))
        _loadable(art)
    shutil.rmtree(clean)
    return kills


@pytest.fixture
def art(tiny_artifact, tmp_path) -> Path:
    dst = tmp_path / "work" / "artifact"
    shutil.copytree(tiny_artifact("bert"), dst)
    return dst


def test_kill_during_quantize_fresh_and_existing(art):
    args = ["quantize", str(art), "--precision", "int8"]
    assert _campaign(art, args, wanted=2) >= 3  # fresh: no int8 yet
    assert _run(args).returncode == 0  # now an int8 exists: re-quantizing replaces it
    assert _campaign(art, args, wanted=5) >= 5  # every publishing step: new folder, swap, removal, relink, swap


def test_kill_during_optimize(art):
    assert _campaign(art, ["optimize", str(art)], wanted=1) >= 2


def test_kill_during_triton_fresh_and_existing(art, tmp_path):
    repo = tmp_path / "repo"
    args = ["triton", str(art), "--repo", str(repo), "--overwrite", "--name", "m"]
    total = _ops(_run(args))
    for n in _moments(total, 3):
        shutil.rmtree(repo)
        if n % 2:  # existing target half the time
            assert _run(args).returncode == 0
        existed = (repo / "m" / "config.pbtxt").exists()
        assert _run(args, kill_at=n).returncode == -signal.SIGKILL
        model = repo / "m"
        assert not model.exists() or {p.name for p in model.iterdir()} == {"1", "config.pbtxt"}, n  # whole or absent
        if existed:
            assert (model / "config.pbtxt").exists(), n  # a kill never loses the model that was there
        assert _run(args).returncode == 0
        assert not _leftovers(repo), _leftovers(repo)
    assert (repo / "m" / "1" / "model.onnx").exists()


def test_kill_during_export_fresh_and_existing(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("bert")
    out = tmp_path / "exp" / "artifact"
    args = ["export", str(ckpt), "--out", str(out), "--overwrite"]
    total = _ops(_run(args))
    for n, fresh in ((total, False), (max(1, total // 2), True)):  # the swap over an existing one; mid-staging
        if fresh:
            shutil.rmtree(out)
        assert _run(args, kill_at=n).returncode == -signal.SIGKILL
        assert _loadable(out) == (set() if fresh else {"fp32"})  # the old artifact whole, or (fresh) none at all
        rerun = _run(args)
        assert rerun.returncode == 0 and not _leftovers(out.parent), _leftovers(out.parent)
        assert _loadable(out) == {"fp32"}


def test_stale_scratch_is_removed_with_a_line_saying_how_much(art):
    stale = art / ".quantize-deadbeef"
    stale.mkdir()
    (stale / "big.onnx").write_bytes(b"\0" * (3 << 20))
    result = _run(["optimize", str(art)])
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert "3.0 MiB freed" in result.stderr, result.stderr
