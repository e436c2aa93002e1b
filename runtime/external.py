"""Refuse a variant whose ONNX file points its external data anywhere but its own, hashed, artifact files."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from onnxformer.artifact.files import confined
from onnxformer.artifact.manifest import Variant
from onnxformer.errors import IntegrityError
from onnxformer.runtime.onnx_wire import external_locations


def check_external_data(directory: Path, record: Variant, model_path: Path) -> None:
    """Every external-data location must be relative, free of ``..``, stay inside ``directory`` once symlinks
    are resolved, and be a file the manifest hashed (so its bytes were verified too)."""
    hashed = set(record.all_files)
    graph = model_path.resolve().relative_to(directory.resolve()).as_posix()
    for location in external_locations(model_path):
        where = f"{graph} stores weights in {location!r}"
        if not location or os.path.isabs(location) or PurePosixPath(location).is_absolute():
            raise IntegrityError(f"{where}: an absolute or empty path; external data must sit next to the graph. "
                                 "Re-export the model")
        if ".." in PurePosixPath(location.replace("\\", "/")).parts:
            raise IntegrityError(f"{where}: '..' leaves the artifact directory; re-export the model")
        relative = (PurePosixPath(graph).parent / location.replace("\\", "/")).as_posix()
        confined(directory, relative)  # raises when a symlink resolves outside the directory
        if relative not in hashed:
            raise IntegrityError(f"{where}, a file the manifest does not hash; re-export or re-quantize the variant")
