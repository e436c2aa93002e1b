"""Issue 26, items 8-9: a runtime-only install (`pip install "onnxformer[cpu]"`). Simulated in a subprocess whose
import system refuses every module that only the other extras install (pyproject's extras are the truth): each
command that needs one ends in one line naming the extra, exit 1; `bench` still measures and writes its report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from onnxformer.extras import BROUGHT_BY, _import_name, extras_for, missing_module_message

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
EXTRAS = PYPROJECT["optional-dependencies"]


def _modules(extras: list[str]) -> set[str]:
    return {_import_name(r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip())
            for e in extras for r in EXTRAS[e]}


# What a `[cpu]` install lacks: every module of the other extras, and what those bring (BROUGHT_BY).
BLOCKED = sorted((_modules([e for e in EXTRAS if e != "cpu"]) | set(BROUGHT_BY)) - _modules(["cpu"]))
BLOCKER = """
import sys
from importlib.abc import MetaPathFinder
BLOCKED = set({blocked!r})
class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from onnxformer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_runtime_only(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=BLOCKED)
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_every_extra_module_maps_to_its_extra():
    """The table read from the installed metadata agrees with pyproject.toml for every module of every extra."""
    for extra in EXTRAS:
        for module in _modules([extra]):
            assert extra == "dev" or extra in (extras_for(module) or ()), (module, extra)
    assert extras_for("torch") == ("export",) and extras_for("fastapi.responses") == ("serve",)
    assert extras_for("onnxruntime") == ("cpu", "gpu") and extras_for("grpc") == ("serve",)
    assert extras_for("openai") == ("dev",)  # named only when nothing else installs it
    assert extras_for("numpy") is None and extras_for("onnxformer.serve") is None  # base / ours: not an extra
    assert missing_module_message(ModuleNotFoundError("x", name="scipy")) is None


@pytest.mark.parametrize("command, extra", [("serve", "serve"), ("export", "export"), ("quantize", "export"),
                                            ("triton", "serve"), ("build", "export")])
def test_a_runtime_only_install_names_the_extra(command, extra, tiny_artifact, tiny_checkpoint, tmp_path):
    art = str(tiny_artifact("bert", "feature-extraction"))
    argv = {"serve": [art], "export": [str(tiny_checkpoint()), "--out", str(tmp_path / "o")],
            "quantize": [art, "--precision", "int8"], "triton": [art, "--repo", str(tmp_path / "repo")],
            "build": [str(tiny_checkpoint()), "--out", str(tmp_path / "b")]}[command]
    proc = run_runtime_only(command, *argv, cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    *before, last = err.splitlines()
    assert not before or command == "build", err  # build logs "export: started" first
    assert last.startswith(f"onnxformer: error: `onnxformer {command}` needs ")
    assert last.endswith(f'which is not installed: pip install "onnxformer[{extra}]"'), err


def test_bench_in_a_runtime_only_install_writes_its_report(tiny_artifact, tmp_path):
    """Item 9: the report is written first; without matplotlib the plots are skipped, and the console says so."""
    out = tmp_path / "r" / "bench.json"
    proc = run_runtime_only("bench", str(tiny_artifact("bert", "feature-extraction")), "--batch", "1", "--seq", "8",
                            "--iters", "2", "--warmup", "1", "--threads", "1", "--providers", "cpu", "--in-process",
                            "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    configs = {c["name"]: c for c in report["configs"]}
    assert configs["fp32@cpu"]["status"] == "ok"
    assert configs["pytorch-fp32@cpu"]["status"] == "unavailable" and "torch" in configs["pytorch-fp32@cpu"]["reason"]
    assert (tmp_path / "r" / "bench.md").read_text().startswith("# Benchmark:")
    assert not list((tmp_path / "r").glob("*.png"))
    err = " ".join(proc.stderr.split())
    assert 'plots skipped: matplotlib is not installed (pip install "onnxformer[export]")' in err, proc.stderr
