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


def test_every_cli_help_states_its_defaults():
    """Issue 16: defaults shown in every help text (the formatter adds those the help does not state)."""
    from onnxformer.cli import parser

    serve = next(a for a in parser()._subparsers._group_actions[0].choices.items() if a[0] == "serve")[1]
    text = serve.format_help()
    assert "(default: 8000)" in text and "(default: 32)" in text


def test_readme_stop_example_is_a_real_newline():
    """Issue 16, defect 7: the README's `--stop "\\n"` passed a backslash and an n."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert '--stop "\\n"' not in readme and "--stop $'\\n'" in readme
