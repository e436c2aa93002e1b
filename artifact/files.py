"""File primitives shared by every stage: sha256, atomic writes, path confinement."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from onnxformer.errors import IntegrityError

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """What open()/mkdir() would have given: mkstemp/mkdtemp make files 0600 and directories 0700, which a
    server running as another user (or a Triton container) cannot read."""
    return (0o777 if directory else 0o666) & ~umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    A killed process leaves either the old file or the new one, never a torn one. The file gets the
    permissions a plain write would (the umask's), not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def confined(root: Path, relative: str) -> Path:
    """Resolve ``relative`` inside ``root``; refuse absolute paths, ``..`` and symlinks leaving root."""
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise IntegrityError(f"path {relative!r} in the manifest must be relative to the artifact directory")
    if ".." in Path(relative).parts:
        raise IntegrityError(f"path {relative!r} in the manifest must not contain '..'")
    root = root.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise IntegrityError(
            f"{relative!r} resolves to {target}, outside the artifact directory {root} "
            "(a symlink leaving it?); re-export the model instead of linking files in"
        )
    return target
