"""A variant that fails to open is never replaced silently (issue 26, item 2): the loader, the one place that
decides the fallback, names the variant passed over and why; Model keeps it, the server shows it in its banner,
its WARNING log, /v2/models/{name} and /metrics; strict loading (``serve --strict``) makes it fatal."""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devkit.servers import free_port, running_server
from onnxformer.errors import ArtifactError, IntegrityError
from onnxformer.runtime import Model

SHA_MISMATCH = "sha256"  # what the integrity check says of a file whose bytes changed


def _with_int8(art: Path) -> Path:
    """Add an "int8" variant the CPU prefers (here: the fp32 graph's bytes, recorded as int8 meeting the budget)."""
    m = json.loads((art / "manifest.json").read_text())
    (art / "int8").mkdir()
    shutil.copy(art / "fp32" / "model.onnx", art / "int8" / "model.onnx")
    fp32 = m["variants"]["fp32"]
    m["variants"]["int8"] = {**fp32, "file": "int8/model.onnx", "precision": "int8", "providers": ["cpu"],
                             "fidelity": {"min_cosine": 1.0}, "files": {"int8/model.onnx": fp32["sha256"]}}
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def _damage(art: Path) -> None:
    with open(art / "int8" / "model.onnx", "ab") as f:
        f.write(b"\0")  # the bytes no longer match the manifest's sha256


@pytest.fixture
def damaged(tiny_artifact, copy_artifact, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ONNXFORMER_CACHE", str(tmp_path / "cache"))  # latencies measured at load: this test's own
    art = _with_int8(copy_artifact(tiny_artifact("bert")))
    assert Model.load(art, measure=False).variant == "int8"  # the premise: intact, it is the one chosen
    _damage(art)
    return art


def test_model_names_the_variant_passed_over_and_logs_it_at_warning(damaged, caplog):
    with caplog.at_level(logging.WARNING, logger="onnxformer.runtime"):
        model = Model.load(damaged, measure=False)
    assert model.variant == "fp32" and list(model.passed_over) == ["int8"], model.passed_over
    assert SHA_MISMATCH in model.passed_over["int8"], model.passed_over
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("int8 passed over" in w and SHA_MISMATCH in w and "running fp32" in w for w in warnings), warnings
    assert Model.load(damaged, variant="fp32").passed_over == {}  # named: nothing was passed over


def test_a_variant_damaged_while_timing_at_load_is_passed_over_too(damaged):
    """No latency recorded for this CPU: the eligible variants are timed at load, which verifies them first."""
    model = Model.load(damaged)  # measure=True
    assert model.variant == "fp32" and SHA_MISMATCH in model.passed_over["int8"], model.passed_over


@pytest.mark.parametrize("measure", [False, True])
def test_strict_refuses_to_run_another_variant(damaged, measure):
    with pytest.raises(ArtifactError, match="variant int8 cannot be used .*strict mode forbids"):
        Model.load(damaged, measure=measure, variant_fallback=False)
    with pytest.raises(IntegrityError):
        Model.load(damaged, variant="int8")  # named: no substitute, as before


def test_server_metadata_and_metrics_name_the_variant_passed_over(damaged):
    with running_server(lambda: Model.load(damaged)) as url:
        name = Model.load(damaged, variant="fp32").manifest.name
        params = httpx.get(f"{url}/v2/models/{name}", timeout=10).json()["parameters"]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert params["variant"] == "fp32" and params["passed_over"].startswith("int8: "), params
    assert SHA_MISMATCH in params["passed_over"], params
    line = next((s for s in metrics.splitlines() if s.startswith("onnxformer_variant_passed_over{")), "")
    assert f'model="{name}"' in line and 'variant="int8"' in line and SHA_MISMATCH in line, metrics
    assert line.endswith(" 1.0"), line


def test_intact_server_reports_nothing_passed_over(tiny_artifact):
    art = tiny_artifact("bert")
    with running_server(lambda: Model.load(art)) as url:
        name = Model.load(art).manifest.name
        params = httpx.get(f"{url}/v2/models/{name}", timeout=10).json()["parameters"]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "passed_over" not in params and "onnxformer_variant_passed_over{" not in metrics


def _serve(art: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onnxformer", "serve", str(art), "--port", str(free_port()), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_banner_and_log_say_which_variant_was_passed_over(damaged):
    proc = _serve(damaged)
    lines: list[str] = []
    try:  # uvicorn's "running on" line comes after the banner: read up to it (or the end, if it fails)
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "Uvicorn running on" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = "\n".join(lines)
    assert re.search(r"serving \S+ \(feature-extraction, fp32 on cpu\)", text), text
    assert re.search(r"^warning: \S+: variant int8 passed over \(.*sha256.*\); serving fp32 instead \(--strict", text,
                     re.MULTILINE), text  # one line
    assert re.search(r"WARNING.*int8 passed over", text), text  # the log, at WARNING, without -v


def test_serve_strict_refuses_to_start_in_one_line(damaged):
    r = subprocess.run([sys.executable, "-m", "onnxformer", "serve", str(damaged), "--strict", "--port", "1"],
                       capture_output=True, text=True, timeout=120)
    lines = [s for s in (r.stdout + r.stderr).splitlines() if s.strip()]
    assert r.returncode == 1 and len(lines) == 1, lines
    assert "variant int8 cannot be used" in lines[0] and "strict" in lines[0], lines
