"""Peers in their own virtual environments (benchmarks/bench/peer_env.py): the registry entries, the pins, the
"not measured" line when an environment cannot be made, and (slow) the optimum peer for real on MiniLM."""
from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from onnxformer.benchmarks import peer_env, peers
from onnxformer.benchmarks.peer_env import PeerEnv, PeerEnvError
from onnxformer.benchmarks.peers import OPENVINO_ENV, OPTIMUM_ENV, PEER, PEERS, peer_candidates
from onnxformer.benchmarks.runners import ArtifactContext

BENCHMARKS = Path(peers.__file__).parent


def fake_ctx(source: Path) -> ArtifactContext:
    """Just what the peers' checks read: task, source checkpoint, variants."""
    manifest = SimpleNamespace(task="feature-extraction", source_path=str(source), variants={"fp32": None})
    return ArtifactContext(Path("/nonexistent"), manifest, 1, 1)


@pytest.fixture
def no_pip(tmp_path, monkeypatch):
    """An empty peer-environment cache and a pip that can find nothing (no index, no config, no find-links)."""
    monkeypatch.setenv("ONNXFORMER_PEER_ENVS", str(tmp_path / "envs"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setattr(peer_env, "_FAILED", {})
    return tmp_path / "envs"


def test_the_other_stacks_are_script_peers_in_their_own_environments():
    others = {p.name: p for p in PEERS if p.kind == PEER}
    assert list(others) == ["optimum-fp32", "optimum-int8", "st-onnx-int8", "openvino-fp32", "openvino-int8"]
    for peer in others.values():
        assert peer.load is None and (BENCHMARKS / peer.script).is_file() and peer.devices == ("cpu",)
    assert {others[n].environment for n in ("optimum-fp32", "optimum-int8", "st-onnx-int8")} == {OPTIMUM_ENV}
    assert {others[n].environment for n in ("openvino-fp32", "openvino-int8")} == {OPENVINO_ENV}
    assert "transformers<4.58" in OPTIMUM_ENV.requirements and "openvino==2026.4.*" in OPENVINO_ENV.requirements
    assert all(p.environment is None and p.load is not None for p in PEERS if p.kind == peers.PYTORCH)


def test_every_environment_pins_this_torch_build_and_onnxruntime():
    """The project's exact torch (its +cpu label included: never a CUDA build) and onnxruntime."""
    expected = [f"torch=={metadata.version('torch')}", f"onnxruntime=={metadata.version('onnxruntime')}"]
    assert OPTIMUM_ENV.constraints() == OPENVINO_ENV.constraints() == expected
    assert OPTIMUM_ENV.path().name.startswith("optimum-") and OPTIMUM_ENV.path() != OPENVINO_ENV.path()
    assert PeerEnv("optimum", (*OPTIMUM_ENV.requirements, "x")).path() != OPTIMUM_ENV.path()  # new spec, new env


def test_an_environment_needing_a_pin_this_environment_lacks_is_refused(monkeypatch):
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: (_ for _ in ()).throw(metadata.PackageNotFoundError(d))
                        if d == "torch" else real(d))
    with pytest.raises(PeerEnvError, match=r"it needs torch, pinned to this environment's version, and torch is not "
                                           r"installed here \(pip install 'onnxformer\[export\]'\)"):
        OPTIMUM_ENV.constraints()
    assert OPENVINO_ENV.constraints() == [f"onnxruntime=={metadata.version('onnxruntime')}"]  # needs no torch


def test_a_failed_environment_is_not_measured_once_and_leaves_nothing(no_pip, capsys, minilm_checkpoint):
    torch_before = metadata.version("torch")
    found = {c.name: c for c in peer_candidates(fake_ctx(minilm_checkpoint), Path("/nonexistent"), {PEER: ["cpu"]})}
    assert list(found) == ["optimum-fp32@cpu", "optimum-int8@cpu", "st-onnx-int8@cpu", "openvino-fp32@cpu",
                           "openvino-int8@cpu"]
    for name, cand in found.items():
        assert cand.load is None, name
        env = "openvino" if name.startswith("openvino") else "optimum"
        assert cand.reason.startswith(f"not measured: {env} — pip install failed ("), cand.reason
        assert "the peer needs PyPI (or pip's PIP_INDEX_URL) to build its environment" in cand.reason
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("not measured:")]
    assert [line.split(" — ")[0] for line in err] == ["not measured: optimum", "not measured: openvino"]  # pip once each
    assert [p.name for p in no_pip.iterdir()] == []  # no half-built environment left behind
    assert metadata.version("torch") == torch_before


def test_no_peers_makes_no_environment(no_pip, minilm_checkpoint, monkeypatch):
    monkeypatch.setattr(peer_env, "_build", lambda *a: pytest.fail("--no-peers built a peer environment"))
    assert peer_candidates(fake_ctx(minilm_checkpoint), Path("/nonexistent"), {}) == []
    assert not no_pip.exists()


def test_a_built_environment_is_reused(no_pip, monkeypatch):
    env = PeerEnv("demo", ("nothing-to-install",))
    calls = []

    def build(e: PeerEnv, path: Path) -> None:
        calls.append(path)
        (path / "bin").mkdir(parents=True)
        (path / peer_env.COMPLETE).write_text("{}")

    monkeypatch.setattr(peer_env, "_build", build)
    assert peer_env.ensure(env) == peer_env.ensure(env) == env.path() / "bin" / "python"
    assert calls == [env.path()] and env.path().parent == no_pip


def test_peer_pooling_matches_the_runtime():
    """peer_common restates runtime/pooling for numpy-only peers: same numbers for every pooling mode."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peer_common
    finally:
        sys.path.remove(str(BENCHMARKS))
    from onnxformer.runtime.pooling import POOLINGS, pool

    rng = np.random.default_rng(0)
    states, mask = rng.normal(size=(3, 5, 4)), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for mode in POOLINGS:
        np.testing.assert_allclose(peer_common.pool(states, mask, mode), pool(states, mask, mode), err_msg=mode)


@pytest.mark.slow
def test_optimum_peer_runs_on_minilm(minilm_artifact):
    """The optimum environment for real (made once per machine: minutes; cached under ~/.cache/onnxformer) and
    its int8 peer on MiniLM, in its own process, against PyTorch fp32 on the same inputs."""
    from onnxformer.benchmarks.harness import Settings, run_benchmark
    from onnxformer.benchmarks.stats import Budget

    if not (OPTIMUM_ENV.path() / peer_env.COMPLETE).is_file() and not os.environ.get("ONNXFORMER_BUILD_PEER_ENVS"):
        pytest.skip("the optimum peer environment is not built on this machine (tests need no network): run "
                    "`onnxformer bench` once, or set ONNXFORMER_BUILD_PEER_ENVS=1 to let this test build it")
    try:
        peer_env.ensure(OPTIMUM_ENV)
    except PeerEnvError as e:
        pytest.skip(f"the optimum environment cannot be made here: {e}")
    only = tuple(p for p in PEERS if p.name in ("pytorch-fp32", "optimum-int8"))
    settings = Settings(batches=[2], seqs=[16], threads=1, budget=Budget(warmup=1, iters=3, seconds=None),
                        providers=["cpu"], variants=["fp32"], isolate=False, peers=["optimum-int8"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(peers, "PEERS", only)
        report = run_benchmark(minilm_artifact, settings)
    configs = {c["name"]: c for c in report["configs"]}
    assert configs["optimum-int8@cpu"]["status"] == "ok", configs
    assert configs["optimum-int8@cpu"]["libraries"]["transformers"].startswith("4.57")  # its own environment's
    rows = {r["config"]: r for r in report["results"]}
    assert 0.9 < rows["optimum-int8@cpu"]["fidelity_cosine"] < 1.0
    assert rows["optimum-int8@cpu"]["model_only"]["iterations"] == 3.0
