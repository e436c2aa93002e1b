"""Build an artifact directory beside its destination, then move it into place in one rename.

A killed export leaves only a hidden ``.<name>.staging-*`` directory, never a half-written artifact.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from onnxformer.artifact.files import default_mode
from onnxformer.artifact.manifest import is_artifact
from onnxformer.artifact.scratch import prepare_parent, scratch_dir, swap_into_place, sweep
from onnxformer.errors import ArtifactError


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything, an earlier artifact included (its variants would be lost), unless --overwrite."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ArtifactError(f"{out} exists and is a file; choose another --out")
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return
    if is_artifact(out):
        raise ArtifactError(f"{out} already holds an onnxformer artifact; pass --overwrite to replace it "
                            "(its variants are replaced too) or choose another --out")
    raise ArtifactError(f"{out} exists and is not an onnxformer artifact; choose another --out or pass --overwrite")


@contextlib.contextmanager
def staging_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty directory; on success it replaces ``out`` atomically, on failure it is removed (after a
    SIGKILL: by the next export to ``out``, which sweeps stale staging first)."""
    check_destination(out, overwrite)
    prepare_parent(out)
    staging, old = f".{out.name}.staging-", f".{out.name}.old-"
    sweep(out.parent, staging)
    sweep(out.parent, old)
    with scratch_dir(out.parent, staging) as stage:
        os.chmod(stage, default_mode(directory=True))  # becomes the artifact: readable as a mkdir would make it
        yield stage
        swap_into_place(stage, out, old)
