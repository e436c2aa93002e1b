"""Triton Python backend model written by `onnxformer triton --backend python` (do not edit: rewrite it).

Triton's stub runs its own Python with its own sys.path: the environment onnxformer was installed in (recorded
beside this file, in environment.json, by the command that wrote the repository) is put first on it before anything
else is imported, after the folders given with --python-path (e.g. a numpy<2 for a stub built against numpy 1).
The model itself is onnxformer.serve.triton_backend.TritonModel.
"""
import json
import site
import sys
from pathlib import Path

_env = json.loads((Path(__file__).parent / "environment.json").read_text())
if list(sys.version_info[:2]) != _env["python"]:
    raise RuntimeError(f"this repository was written for Python {_env['python']} (onnxformer's environment) but "
                       f"Triton's stub runs Python {sys.version_info[0]}.{sys.version_info[1]}: use the stub of "
                       "that version, or rewrite the repository from an environment of the stub's Python")
_before = list(sys.path)
for _dir in _env["site_dirs"]:
    site.addsitedir(_dir)  # .pth files too: an editable install is found through one
# first on the path: --python-path, then the writer's environment (not the system Python's packages)
sys.path[:] = _env["paths"] + [p for p in sys.path if p not in _before] + [p for p in _before if p not in _env["paths"]]

import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by the stub)

from onnxformer.serve.triton_backend import TritonModel  # noqa: E402


class TritonPythonModel(TritonModel):
    def __init__(self) -> None:
        super().__init__(pb_utils)
