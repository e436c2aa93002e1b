"""Bad CLI input is one line on stderr and exit 1: no traceback, no banner, no exporter output."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxformer", *args], capture_output=True, text=True, timeout=120)


def _one_line(r: subprocess.CompletedProcess, words: str) -> None:
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert r.returncode == 1 and len(lines) == 1 and words in lines[0], (r.returncode, lines[:5])


@pytest.mark.parametrize("flags,words", [
    (["--graceful-timeout", "nan"], "--graceful-timeout"), (["--graceful-timeout", "inf"], "--graceful-timeout"),
    (["--timeout", "nan"], "--timeout"), (["--body-timeout", "0"], "--body-timeout"),
    (["--max-connections-per-client", "-1"], "--max-connections-per-client"),
])
def test_serve_refuses_bad_limits(tiny_artifact, flags, words):
    _one_line(_cli("serve", str(tiny_artifact("bert")), *flags), words)


def test_serve_port_in_use_is_one_line_without_a_banner(tiny_artifact):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _cli("serve", str(tiny_artifact("bert")), "--port", str(s.getsockname()[1]))
    _one_line(r, "Address already in use")
    assert "serving" not in r.stdout + r.stderr


def test_export_and_triton_bad_destinations(tiny_artifact, tiny_checkpoint, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    ckpt = str(tiny_checkpoint("bert"))
    _one_line(_cli("export", ckpt, "--out", "/proc/x"), "cannot write")
    _one_line(_cli("export", ckpt, "--out", str(afile / "sub")), "is a file")
    _one_line(_cli("export", ckpt, "--out", str(tmp_path / "o"), "--opset", "-3"), "--opset -3")
    _one_line(_cli("triton", str(tiny_artifact("bert")), "--repo", str(afile)), "is a file")


@pytest.mark.parametrize("flags,words", [(["--threads", "-1"], "--threads"), (["--seconds", "-1"], "--seconds")])
def test_bench_refuses_bad_counts(tiny_artifact, flags, words):
    _one_line(_cli("bench", str(tiny_artifact("bert")), *flags), words)
