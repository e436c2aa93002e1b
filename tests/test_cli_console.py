"""Issue 26, items 10-13: what the CLI says — opt-in peers and their cost, an unreliable PyTorch ratio, the
unsupported-architecture message, help texts, log lines, the build summary, and the package metadata."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import tomllib

from onnxformer.benchmarks import peer_env, peers
from onnxformer.benchmarks.peer_env import PeerEnvError
from onnxformer.benchmarks.summary import add_comparisons
from onnxformer.cli import main, parser
from onnxformer.errors import OnnxformerError

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--batch", "1", "--seq", "8", "--iters", "2", "--warmup", "1", "--providers", "cpu", "--in-process"]


@pytest.fixture
def no_env_build(tmp_path, monkeypatch):
    """An empty peer-environment cache whose builds are recorded (with what the console said before) and fail."""
    monkeypatch.setenv("ONNXFORMER_PEER_ENVS", str(tmp_path / "envs"))
    monkeypatch.setattr(peer_env, "_FAILED", {})
    builds: list = []
    return builds


# --- item 10: peers are opt-in, and their cost is said before anything is built ---------------------------------
def test_bench_builds_no_peer_environment_by_default(tiny_artifact, tmp_path, monkeypatch, no_env_build):
    monkeypatch.setattr(peer_env, "_build", lambda *a: pytest.fail("bench built a peer environment unasked"))
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny_artifact("bert", "feature-extraction")), *FAST, "--threads", "1",
                 "--out", str(out)]) == 0
    assert {c["kind"] for c in json.loads(out.read_text())["configs"]} == {"pytorch", "variant"}


def test_peers_are_chosen_by_environment_or_name():
    assert peers.select_peers([]) == ()
    assert peers.select_peers(["optimum"]) == ("optimum-fp32", "optimum-int8", "st-onnx-int8")
    assert peers.select_peers(["openvino-int8", "optimum-int8"]) == ("optimum-int8", "openvino-int8")
    assert len(peers.select_peers(["all"])) == 5
    with pytest.raises(OnnxformerError, match=r"--peers onvino: unknown; choose from all, optimum, openvino, "):
        peers.select_peers(["onvino"])


def test_the_cost_of_a_peer_environment_is_said_before_it_is_built(tiny_artifact, tmp_path, monkeypatch, capsys,
                                                                     no_env_build):
    def build(env, path):
        no_env_build.append(capsys.readouterr().err)  # what the user was told before the build began
        raise PeerEnvError("offline")

    monkeypatch.setattr(peer_env, "_build", build)
    assert main(["bench", str(tiny_artifact("bert", "feature-extraction")), *FAST, "--threads", "1",
                 "--no-baselines", "--peers", "openvino", "--out", str(tmp_path / "b.json")]) == 0
    told = " ".join(no_env_build[0].split())
    assert "peers openvino-fp32, openvino-int8: the openvino environment first builds" in told
    assert "(about 0.5 GB, minutes of pip; once per machine)" in told
    configs = json.loads((tmp_path / "b.json").read_text())["configs"]
    assert [c["status"] for c in configs if c["kind"] == "peer"] == ["unavailable", "unavailable"]


# --- item 11: an oversubscribed PyTorch baseline ----------------------------------------------------------------
def fake_report(threads: int, load: float, torch_ms: float, one_thread_ms: float | None) -> dict:
    def row(config: str, p50: float, one: float | None = None) -> dict:
        return {"config": config, "batch": 1, "seq": 128, "fidelity_cosine": 1.0, "one_thread_p50_ms": one,
                "model_only": {"p50_ms": p50, "min_ms": p50}, "end_to_end": {"p50_ms": p50 + 1, "min_ms": p50 + 1}}

    return {"settings": {"threads": threads}, "load_average_1m_start": load, "artifact": {"name": "m"},
            "environment": {"cpu": {"usable_cores": 2}},
            "configs": [{"name": "pytorch-fp32@cpu", "kind": "pytorch", "device": "cpu", "precision": "fp32",
                         "status": "ok"},
                        {"name": "int8@cpu", "kind": "variant", "device": "cpu", "precision": "int8", "status": "ok"}],
            "results": [row("pytorch-fp32@cpu", torch_ms, one_thread_ms), row("int8@cpu", 1.38)]}


def test_one_thread_beating_n_threads_makes_the_ratio_unreliable(capsys):
    from onnxformer.benchmarks.cli import print_summary
    from onnxformer.benchmarks.stage import rows

    report = fake_report(threads=2, load=0.3, torch_ms=228.0, one_thread_ms=1.1)  # the machine
    add_comparisons(report)
    assert "pytorch-fp32@cpu at 1×128: 1.10 ms on 1 thread, 228.00 ms on 2" in report["baseline_unreliable"]
    assert report["headline"]["baseline_unreliable"] == report["baseline_unreliable"]
    print_summary(report)
    err = " ".join(capsys.readouterr().err.split())
    assert "165" not in err and "│ unreliable │" in err, err
    assert "speedups over PyTorch unreliable, not shown: its 2-thread baseline was oversubscribed" in err
    details = [r["detail"] for r in rows(report, 3.0)]
    assert not any("× PyTorch" in d for d in details) and any("oversubscribed" in d for d in details)


def test_load_before_the_run_makes_the_ratio_unreliable_and_a_quiet_run_does_not():
    loaded = fake_report(threads=2, load=5.2, torch_ms=3.0, one_thread_ms=5.0)
    add_comparisons(loaded)
    assert loaded["baseline_unreliable"] == "1-minute load average 5.2 on 2 cores before the run"
    quiet = fake_report(threads=2, load=0.2, torch_ms=3.0, one_thread_ms=5.0)
    add_comparisons(quiet)
    assert quiet["baseline_unreliable"] is None and quiet["results"][1]["speedup_reliable"]
    single = fake_report(threads=1, load=5.2, torch_ms=3.0, one_thread_ms=None)  # 1 thread: nothing to collapse
    add_comparisons(single)
    assert single["baseline_unreliable"] is None


def test_the_pytorch_baseline_is_checked_on_one_thread(tiny_artifact, tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny_artifact("bert", "feature-extraction")), *FAST, "--threads", "2",
                 "--variants", "fp32", "--out", str(out)]) == 0
    rows = {r["config"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["pytorch-fp32@cpu"]["one_thread_p50_ms"] > 0
    assert rows["fp32@cpu"]["one_thread_p50_ms"] is None  # ONNX Runtime's pool is per session: not checked


# --- item 12: the unsupported-architecture message ---------------------------------------------------------------
def test_unsupported_decoder_lists_every_family_by_kind_and_task(capsys, tmp_path):
    ckpt = tmp_path / "falcon"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "falcon", "architectures": ["FalconForCausalLM"]}))
    (ckpt / "model.safetensors").write_bytes(b"")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unsupported architecture 'falcon'; supported families by kind:" in err
    assert "decoder (--task text-generation): gemma3_text, gpt2, llama," in err
    assert "seq2seq (--task text2text-generation): bart, marian, t5" in err
    assert "encoder (--task feature-extraction | text-classification | token-classification | question-answering)" \
        in err and "qwen3 also (--task feature-extraction)" in err


# --- item 13: noise and help ---------------------------------------------------------------------------------
def test_log_lines_carry_no_source_location(capsys):
    from onnxformer.progress import StageLog

    with StageLog() as log:  # not a terminal: one console.log line per message
        log.update("quantize", "int8: smoothing activation outliers")
    err = capsys.readouterr().err
    assert "int8: smoothing activation outliers" in err and "progress.py" not in err


def test_switch_help_states_no_misleading_default_and_every_generate_option_has_help():
    commands = parser()._subparsers._group_actions[0].choices
    serve = " ".join(commands["serve"].format_help().split())
    assert "--no-batching run each request alone (no dynamic batching)" in serve
    assert "(default: True)" not in serve and "(default: 8000)" in serve
    generate = commands["generate"]
    undocumented = [a.option_strings for a in generate._actions if a.option_strings and not a.help]
    assert undocumented == []
    assert "(default: 32)" in " ".join(generate.format_help().split())


def test_verbose_after_the_sub_command(tmp_path, capsys):
    args = parser().parse_args(["bench", str(tmp_path), "-v"])
    assert args.verbose is True
    assert parser().parse_args(["-v", "bench", str(tmp_path)]).verbose is True
    assert parser().parse_args(["bench", str(tmp_path)]).verbose is False


def test_build_stage_reports_no_zero_progress_and_no_zero_times(tiny_artifact, copy_artifact, capsys):
    import argparse

    from onnxformer.benchmarks import stage

    seen: list[str] = []
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    rows = stage.bench_stage(argparse.Namespace(), art, seen.append)
    assert seen[-1].endswith("done") and not any(m.startswith("0/0") for m in seen), seen
    assert [r["seconds"] is None for r in rows] == [True] * (len(rows) - 1) + [False]


def test_build_says_where_the_artifact_is_and_which_variants_cannot_run_here(tiny_artifact, copy_artifact, capsys,
                                                                                monkeypatch):
    from onnxformer import build
    from onnxformer.artifact.manifest import load_manifest

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    manifest = load_manifest(art)
    fp16 = copy.deepcopy(manifest.variants["fp32"])
    fp16.providers = ["cuda", "tensorrt"]
    manifest.variants["fp16"] = fp16
    manifest.save(art)
    rows = [{"stage": "quantize", "variant": "fp16", "detail": "min cosine 0.9999", "seconds": 3.0},
            {"stage": "bench", "variant": "fp32@cpu", "detail": "1×16: p50 0.1 ms", "seconds": None}]
    monkeypatch.setattr(build, "STAGES", [("quantize", lambda *a: rows)])
    monkeypatch.setattr("onnxformer.runtime.providers.gpu_present", lambda: False)
    build.build(build.argparse.Namespace(model="x", out=str(art), name="tiny"))
    assert "for cuda, tensorrt, cannot run on this machine: " in rows[0]["detail"]
    assert "cannot run" not in rows[1]["detail"]
    err = " ".join(capsys.readouterr().err.split())
    assert f"artifact: {art.resolve()} (summary: report.md" in err
    assert f"onnxformer serve {art}" in err and "Model.load" in err and ".embed(" in err
    report = (art / "report.md").read_text()
    assert "| bench | fp32@cpu | 1×16: p50 0.1 ms |  |" in report and "0.0s" not in report


def test_pyproject_declares_what_setuptools_would_warn_about():
    """An SPDX license string (a table is deprecated), and every folder of package data a declared package."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    tool = project["tool"]["setuptools"]
    for package, globs in tool["package-data"].items():
        assert package in tool["packages"] and not any("/" in g for g in globs), (package, globs)
    for package in tool["packages"]:
        parent, _, leaf = package.rpartition(".")
        folder = tool["package-dir"].get(package) or (Path(tool["package-dir"][parent]) / leaf
                                                      if parent in tool["package-dir"] else None)
        if folder is not None:
            assert (ROOT / folder).is_dir(), package
