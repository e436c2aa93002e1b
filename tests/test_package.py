"""The install exposes one import name: the stage folders live under `onnxformer`, never bare on sys.path."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("bare", ["export", "runtime", "quantize", "benchmarks", "serve"])
def test_no_bare_stage_module(bare, tmp_path):
    proc = subprocess.run([sys.executable, "-c", f"import {bare}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and f"No module named '{bare}'" in proc.stderr


def test_stages_import_under_onnxformer(tmp_path):
    code = "import onnxformer.export, onnxformer.quantize, onnxformer.runtime, onnxformer.benchmarks, onnxformer.serve"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
