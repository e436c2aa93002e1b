"""Scratch and staging directories that a killed command cannot leak.

Each scratch directory has a ``<name>.lock`` file beside it that its owner keeps ``flock``-ed while it works; the kernel drops the
lock when the process dies, however it dies. ``sweep`` (run at the start of every command that makes scratch
space) removes the ones whose lock nobody holds — a concurrent command's scratch is left alone — and says how
much it freed.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger("onnxformer.scratch")  # the CLI shows this logger's lines even when quiet
LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A locked temporary directory ``parent/<prefix>XXXXXXXX``, removed whatever happens (even SIGKILL:
    then by the next ``sweep``). The lock is a sibling file (``….lock``), so the directory holds only the work."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    lock_path = _lock_of(path)
    lock = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        os.close(lock)


def sweep(parent: Path, prefix: str) -> tuple[int, int]:
    """Remove stale ``parent/<prefix>*`` directories (and files: temp files of atomic writes) that no live
    process holds; returns (how many, bytes freed) and logs a line when it freed anything."""
    if not parent.is_dir():
        return 0, 0
    count = freed = 0
    for path in sorted(parent.glob(prefix + "*")):
        if path.name.endswith(LOCK_SUFFIX) or _in_use(path):
            continue  # lock files go with their directory
        size = tree_size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        _lock_of(path).unlink(missing_ok=True)
        count, freed = count + 1, freed + size
    for orphan in parent.glob(prefix + "*" + LOCK_SUFFIX):  # a run killed between its lock and its directory
        if not orphan.with_name(orphan.name.removesuffix(LOCK_SUFFIX)).exists() and not _locked(orphan):
            orphan.unlink(missing_ok=True)
    if count:
        log.warning("removed %d stale %s* item(s) in %s left by an interrupted run: %s freed",
                    count, prefix, parent, human_bytes(freed))
    return count, freed


def _lock_of(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def _in_use(path: Path) -> bool:
    lock = _lock_of(path)
    return lock.exists() and _locked(lock)


def _locked(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def tree_size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def prepare_parent(out: Path) -> None:
    """Create ``out``'s parent folder, or one line saying why it cannot be (a file in the way, /proc, …)."""
    from onnxformer.errors import ArtifactError

    for parent in [out.parent, *out.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ArtifactError(f"cannot write {out}: {parent} is a file, not a directory; choose another path")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".onnxformer-probe-", dir=out.parent)
        os.rmdir(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write into {out.parent} ({e.strerror or e}); choose another path") from None


def swap_into_place(stage: Path, out: Path, old_prefix: str) -> None:
    """Replace ``out`` with ``stage``: one atomic exchange where Linux offers it (renameat2), so ``out`` is at
    every instant the old tree or the new one; elsewhere two renames (``out`` briefly absent, never half-written).
    The old tree ends in a ``<old_prefix>*`` folder (swept if this process dies before deleting it)."""
    if not out.exists():
        os.rename(stage, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=old_prefix, dir=out.parent))
    if _exchange(stage, out):
        os.rename(stage, trash / "old")
    else:
        os.rename(out, trash / "old")
        os.rename(stage, out)
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
