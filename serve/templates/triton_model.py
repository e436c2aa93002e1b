"""Triton Python backend model written by `onnxformer triton --backend python` (do not edit: rewrite it).

Triton's stub runs its own Python with its own sys.path: the environment onnxformer was installed in (recorded
beside this file, in environment.json, by the command that wrote the repository) is put on it before anything
else is imported. The model itself is onnxformer.serve.triton_backend.TritonModel.
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
for _dir in _env["site_dirs"]:
    site.addsitedir(_dir)  # .pth files too: an editable install is found through one

import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by the stub)

from onnxformer.serve.triton_backend import TritonModel  # noqa: E402


class TritonPythonModel(TritonModel):
    def __init__(self) -> None:
        super().__init__(pb_utils)
