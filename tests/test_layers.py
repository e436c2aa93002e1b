"""The layers of the package (issue 24): the artifact contract at the bottom, then the runtime, export/quantize,
serve, benchmarks, the CLI on top. Checked on the import graph read from the sources (imports inside functions
included), and on a built wheel: it holds the product only, and `onnxformer bench` runs from it."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name → folder, as pyproject.toml's package-dir maps them
FOLDERS = {"onnxformer.artifact": "artifact", "onnxformer.export": "export", "onnxformer.quantize": "quantize",
           "onnxformer.runtime": "runtime", "onnxformer.serve": "serve", "onnxformer.benchmarks": "benchmarks/bench"}


def _modules() -> dict[str, Path]:
    found = {f"onnxformer.{p.stem}": p for p in (ROOT / "onnxformer").glob("*.py")}
    for package, folder in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxformer"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("onnxformer"))
    return {m for m in out if m in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _importers(of: str, within: str) -> dict[str, set[str]]:
    return {m: {d for d in deps if d.startswith(of)} for m, deps in GRAPH.items()
            if m.startswith(within) and any(d.startswith(of) for d in deps)}


def test_the_contract_imports_nothing_else_of_ours():
    allowed = ("onnxformer.artifact", "onnxformer.errors")
    bad = {m: {d for d in deps if not d.startswith(allowed)} for m, deps in GRAPH.items()
           if m.startswith("onnxformer.artifact")}
    assert not {m: d for m, d in bad.items() if d}


@pytest.mark.parametrize("upper", ["onnxformer.serve", "onnxformer.export", "onnxformer.quantize",
                                   "onnxformer.benchmarks", "onnxformer.cli", "onnxformer.build"])
def test_the_runtime_imports_no_layer_above_it(upper):
    assert not _importers(upper, "onnxformer.runtime")


def test_export_reaches_generation_only_to_validate():
    assert set(_importers("onnxformer.runtime.generation", "onnxformer.export")) <= {
        "onnxformer.export.generative_validate"}


@pytest.mark.parametrize("layer", ["onnxformer.serve", "onnxformer.export", "onnxformer.quantize"])
def test_no_stage_imports_the_benchmarks_or_the_cli(layer):
    assert not _importers("onnxformer.benchmarks", layer)
    assert not _importers("onnxformer.cli", layer) and not _importers("onnxformer.build", layer)


def test_serve_knows_nothing_of_export_or_quantize():
    assert not _importers("onnxformer.export", "onnxformer.serve")
    assert not _importers("onnxformer.quantize", "onnxformer.serve")


def test_no_import_cycle():
    """Tarjan's strongly connected components over module imports (a package's own __init__ aside)."""
    graph = {m: {d for d in deps if d != m and not m.startswith(d + ".")} for m, deps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles


def test_http_lives_in_serve():
    """The core's errors know nothing of statuses; every task has a route entry in serve's table."""
    import onnxformer.errors as errors
    from onnxformer.artifact.tasks import TASKS
    from onnxformer.serve.task_routes import ROUTES

    assert not any(hasattr(errors, name) for name in ("KINDS", "ErrorKind", "ServingError"))
    assert set(ROUTES) == set(TASKS)


def test_symlinks_show_static_tools_the_package_tree():
    for package, folder in FOLDERS.items():
        link = ROOT / "onnxformer" / package.split(".")[1]
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("onnxformer-*.whl"))


def test_the_wheel_holds_the_product_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "onnxformer/benchmarks/cli.py" in names and "onnxformer/benchmarks/peer_optimum.py" in names
    assert "onnxformer/artifact/manifest.py" in names and "onnxformer/quantize/data/evaluation.txt" in names
    research = [n for n in names if "/results/" in n or "bench_" in n or "devkit" in n or "/gpu/" in n
                or n.endswith(("run_suite.py", "fuzz_serve.py", "testing.py", "fuzz.py"))]
    assert not research


def test_bench_runs_from_the_wheel(wheel, tiny_artifact, tmp_path):
    """The installed product alone (the wheel's files first on sys.path, run outside the repository)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = tmp_path / "bench.json"
    code = ("import sys, onnxformer.benchmarks.cli as c; assert c.__file__.startswith(sys.argv[1]), c.__file__; "
            "from onnxformer.cli import main; sys.exit(main(sys.argv[2:]))")
    proc = subprocess.run([sys.executable, "-c", code, str(site), "bench", str(tiny_artifact("bert", "feature-extraction")),
                           "--variants", "fp32", "--batch", "1", "--seq", "8", "--iters", "2", "--warmup", "1",
                           "--no-baselines", "--in-process", "--providers", "cpu", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin",
                                                                             "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["config"] for r in report["results"]] and all(r["model_only"]["p50_ms"] > 0 for r in report["results"])
