"""Build an artifact directory beside its destination, then move it into place in one rename.

A killed export leaves only a hidden ``.<name>.staging-*`` directory, never a half-written artifact.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from onnxformer.errors import ArtifactError
from onnxformer.runtime.files import default_mode
from onnxformer.runtime.manifest import is_artifact


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything, an earlier artifact included (its variants would be lost), unless --overwrite."""
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is a file; choose another --out")
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return
    if is_artifact(out):
        raise ArtifactError(f"{out} already holds an onnxformer artifact; pass --overwrite to replace it "
                            "(its variants are replaced too) or choose another --out")
    raise ArtifactError(f"{out} exists and is not an onnxformer artifact; choose another --out or pass --overwrite")


@contextlib.contextmanager
def staging_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty directory; on success it replaces ``out`` atomically, on failure it is removed."""
    check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    os.chmod(stage, default_mode(directory=True))  # becomes the artifact: readable as a mkdir would make it
    try:
        yield stage
        _swap_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_into_place(stage: Path, out: Path) -> None:
    if not out.exists():
        os.rename(stage, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, trash / "old")  # from here until the next rename, `out` does not exist: never half-written
    os.rename(stage, out)
    shutil.rmtree(trash, ignore_errors=True)
