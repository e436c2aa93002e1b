"""The GPU check, every part that runs without a GPU: install plan, settings, deadline, report writing."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxformer.benchmarks.gpu import driver, plan
from onnxformer.benchmarks.gpu.install import install_commands
from onnxformer.benchmarks.harness import Settings, run_benchmark
from onnxformer.benchmarks.report import write_report
from onnxformer.benchmarks.stats import Budget
from onnxformer.benchmarks.summary import add_comparisons
from onnxformer.errors import ProviderError

GPU_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"
HAS_GPU = shutil.which("nvidia-smi") is not None


def test_install_commands_pip_and_uv():
    pip = install_commands("/v/bin/python", "/repo", use_uv=False)
    assert pip[1] == ["/v/bin/python", "-m", "pip", "install", "-q", "torch"]  # PyPI's Linux torch is the CUDA build
    assert pip[2][-2:] == ["-e", "/repo[gpu,export,demo]"]
    assert pip[3][-1] == "onnxruntime" and "uninstall" in pip[3]  # the CPU wheel would shadow onnxruntime-gpu
    assert pip[4][-3:] == ["--force-reinstall", "--no-deps", "onnxruntime-gpu"]
    uv = install_commands("/v/bin/python", "/repo", use_uv=True)
    assert all(cmd[:2] == ["uv", "pip"] and "--python" in cmd for cmd in uv)


def test_install_plan_prints_with_the_system_python():
    """run_gpu.sh prints the plan with a bare python3 before the venv has anything: stdlib only."""
    code = "import shlex\nfrom install import install_commands\nprint(shlex.join(install_commands('/v/py', '/r', False)[2]))"
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(GPU_DIR)!r})\n{code}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "/v/py -m pip install -q -e '/r[gpu,export,demo]'"


def test_script_syntax_and_refusal_without_gpu(tmp_path):
    subprocess.run(["bash", "-n", str(GPU_DIR / "run_gpu.sh")], check=True)
    if HAS_GPU:
        pytest.skip("this machine has an NVIDIA driver; the refusal path is for GPU-less machines")
    env = {**os.environ, "VENV": str(tmp_path / "venv"), "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(GPU_DIR / "run_gpu.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "no nvidia-smi" in done.stderr
    assert not (tmp_path / "venv").exists()  # refused before installing anything


def test_gpu_settings_and_time_split():
    s = plan.gpu_settings()
    assert s.providers == ["tensorrt", "cuda"] and s.baseline_devices == ["cuda"] and not s.peers
    assert s.batches == [1, 8, 32] and s.seqs == [128] and s.budget.iters is None and s.isolate
    assert plan.seconds_per_config(remaining=200, configs=8, shapes=3) == pytest.approx((200 - 120) / 48)
    assert plan.seconds_per_config(remaining=400, configs=8, shapes=3, models=2) == pytest.approx((200 - 120) / 48)
    assert plan.seconds_per_config(remaining=30, configs=8, shapes=3) == 0.2
    assert plan.seconds_per_config(remaining=10_000, configs=1, shapes=1) == 2.0


def test_check_gpu_without_driver(monkeypatch):
    monkeypatch.setattr(plan.shutil, "which", lambda name: None)
    with pytest.raises(ProviderError, match="nvidia-smi missing"):
        plan.check_gpu()
    with pytest.raises(ProviderError, match="needs an NVIDIA GPU"):
        driver.main(["--out", "/nonexistent"])


def test_deadline_interrupts_like_ctrl_c():
    driver.arm_deadline(time.time() + 1.0)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)


@pytest.fixture(scope="module")
def gpu_shaped_report(tiny_artifact) -> dict:
    """A real CPU run relabelled as the GPU check would label it (CUDA baselines, GPU-device variants)."""
    settings: Settings = plan.gpu_settings()
    settings.providers, settings.baseline_devices = ["cpu"], ["cpu"]
    settings.batches, settings.seqs, settings.threads, settings.isolate = [1], [8], 1, False
    settings.budget = Budget(warmup=1, iters=3, seconds=None)
    report = copy.deepcopy(run_benchmark(tiny_artifact("bert", "feature-extraction"), settings))
    rename = {"pytorch-fp32@cpu": "pytorch-fp32@cuda", "pytorch-bf16@cpu": "pytorch-fp16@cuda", "fp32@cpu": "fp32@cuda"}
    for c in report["configs"]:
        c["name"], c["device"] = rename[c["name"]], "gpu"
    for r in report["results"]:
        r["config"] = rename[r["config"]]
        r["gpu_memory_mb"] = 123.0  # what PyTorch's allocator / nvidia-smi would report
    add_comparisons(report)
    return report


def test_gpu_report_writing(gpu_shaped_report, tmp_path):
    h = gpu_shaped_report["headline_gpu"]
    assert gpu_shaped_report["headline"] is None and h["device"] == "gpu"
    assert h["best_variant"] == "fp32@cuda" and isinstance(h["speedup_vs_pytorch_fp16"], float)
    paths = write_report(gpu_shaped_report, tmp_path / "gpu-tiny.json")
    md = paths["markdown"].read_text()
    assert "## Headline (GPU, batch 1 × 8 tokens" in md and "vs PyTorch fp16 autocast" in md
    assert "| GPU MB |" in md and "| 123 |" in md and "nvidia-smi" in md
    summary = driver.summary_markdown("NVIDIA Test GPU", {"tiny": gpu_shaped_report})
    assert "# GPU check: NVIDIA Test GPU" in summary and "| tiny | fp32@cuda |" in summary
    assert "[tiny](gpu-tiny.md)" in summary


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_driver_on_a_real_gpu(tmp_path):
    assert driver.main(["--out", str(tmp_path), "--models", "minilm", "--deadline", str(time.time() + 300)]) == 0
    assert (tmp_path / "gpu-summary.md").is_file() and (tmp_path / "gpu-all-MiniLM-L6-v2.json").is_file()
