"""The benchmark harness on a tiny model: fields, ordering, round-trips, plots, baselines, missing torch, Ctrl-C."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxformer.artifact.manifest import Manifest
from onnxformer.benchmarks import measure, peers
from onnxformer.benchmarks.harness import Settings, run_benchmark
from onnxformer.benchmarks.report import load_report, output_paths, write_report
from onnxformer.benchmarks.runners import ArtifactContext, Runner, variant_candidates
from onnxformer.benchmarks.stats import Budget, summarize, time_interleaved
from onnxformer.benchmarks.summary import add_comparisons
from onnxformer.errors import IntegrityError

FAST = Budget(warmup=1, iters=3, seconds=None)
STAT_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "iterations", "seq_per_s", "tokens_per_s")
ROW_NUMBERS = ("peak_rss_over_base_mb", "run_peak_over_steady_mb", "size_mb", "fidelity_cosine", "speedup_model_only",
               "speedup_end_to_end", "fidelity_budget")


@pytest.fixture(scope="session")
def tiny_report(tiny_artifact) -> dict:
    # The other stacks' peers (own environments, minutes to make) are tests/test_peer_env.py's.
    settings = Settings(batches=[1, 2], seqs=[8, 16], threads=1, budget=FAST, providers=["cpu"], peers=False)
    return run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)


def test_every_configuration_ran(tiny_report):
    status = {c["name"]: c["status"] for c in tiny_report["configs"]}
    assert status == {name: "ok" for name in ("pytorch-fp32@cpu", "pytorch-bf16@cpu", "fp32@cpu")}, tiny_report["configs"]
    assert len(tiny_report["results"]) == 3 * 4  # every configuration × (1, 2) × (8, 16)
    assert tiny_report["interrupted"] is False


def test_all_fields_present_and_numeric(tiny_report):
    for row in tiny_report["results"]:
        for mode in ("model_only", "end_to_end"):
            for name in STAT_FIELDS:
                value = row[mode][name]
                assert isinstance(value, float) and math.isfinite(value) and value > 0, (row["config"], mode, name)
            assert row[mode]["iterations"] == 3.0
            assert row[mode]["tokens_per_s"] == pytest.approx(row[mode]["seq_per_s"] * row["seq"])
        for name in ROW_NUMBERS:
            assert isinstance(row[name], float) and math.isfinite(row[name]), (row["config"], name)
        assert row["gpu_memory_mb"] is None  # CPU only: no GPU memory to report
        assert isinstance(row["within_budget"], bool)


def test_percentiles_ordered(tiny_report):
    for row in tiny_report["results"]:
        for mode in ("model_only", "end_to_end"):
            s = row[mode]
            assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]


def test_fidelity_and_speedup_against_pytorch_fp32(tiny_report):
    assert tiny_report["fidelity_reference"] == "pytorch-fp32@cpu"
    for row in tiny_report["results"]:
        if row["config"] == "pytorch-fp32@cpu":
            assert row["fidelity_cosine"] == pytest.approx(1.0) and row["speedup_model_only"] == pytest.approx(1.0)
        if row["config"] == "fp32@cpu":
            assert row["fidelity_cosine"] > 0.99999 and row["within_budget"]
    h = tiny_report["headline"]
    assert (h["batch"], h["seq"]) == (1, 8)  # 1×128 not measured: first shape instead
    assert h["best_variant"] == "fp32@cpu" and isinstance(h["speedup_vs_pytorch_fp32"], float)
    assert h["speedup_vs_optimum_int8"] is None and isinstance(h["speedup_vs_pytorch_bf16"], float)


def test_environment_block(tiny_report):
    env = tiny_report["environment"]
    assert set(env["cpu"]["flags"]) >= {"avx512_vnni", "amx_tile", "avx2"}
    assert env["cpu"]["physical_cores"] >= 1 and env["gpus"] == [] or isinstance(env["gpus"], list)
    assert env["libraries"]["onnxruntime"] and env["libraries"]["torch"]
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]


def test_json_round_trips_and_files_written(tiny_report, tmp_path):
    paths = write_report(tiny_report, tmp_path / "out" / "bench.json")
    assert paths == output_paths(tmp_path / "out" / "bench.json")
    assert load_report(paths["json"]) == json.loads(json.dumps(tiny_report))
    for key in ("latency_png", "speedup_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[key].stat().st_size > 5000
    md = paths["markdown"].read_text()
    assert "| config | batch | seq | model p50 ms" in md and "## Environment" in md and "avx512_vnni=" in md
    assert md.count("| fp32@cpu |") == 4 and "![latency](bench-latency.png)" in md


def test_logits_task(tiny_artifact):
    settings = Settings(batches=[2], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False)
    report = run_benchmark(tiny_artifact("bert", "text-classification"), settings)
    rows = {r["config"]: r for r in report["results"]}
    assert rows["fp32@cpu"]["fidelity_cosine"] > 0.99999
    assert rows["pytorch-bf16@cpu"]["fidelity_cosine"] > 0.9


def test_missing_torch_is_reported_not_a_crash(tiny_artifact, monkeypatch, tmp_path):
    for name in ("torch", "transformers"):
        monkeypatch.setitem(sys.modules, name, None)  # `import torch` now raises ImportError
    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False)
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    configs = {c["name"]: c for c in report["configs"]}
    for name in ("pytorch-fp32@cpu", "pytorch-bf16@cpu"):
        assert configs[name]["status"] == "unavailable"
        assert "torch is not installed" in configs[name]["reason"] and "onnxformer[export]" in configs[name]["reason"]
    assert configs["fp32@cpu"]["status"] == "ok"
    assert report["fidelity_reference"] == "fp32@cpu"  # falls back to the exported fp32 graph
    assert [r["config"] for r in report["results"]] == ["fp32@cpu"]
    assert report["results"][0]["speedup_model_only"] is None
    md = Path(write_report(report, tmp_path / "b.json")["markdown"]).read_text()
    assert "## Not measured" in md and "pytorch-fp32@cpu: unavailable — PyTorch baseline unavailable: torch" in md


def test_ctrl_c_keeps_what_was_measured(tiny_artifact):
    def progress(done: int, total: int, what: str) -> None:
        if what.startswith("batch 1 × 16"):  # Ctrl-C once the first shape is measured
            raise KeyboardInterrupt

    settings = Settings(batches=[1], seqs=[8, 16], threads=1, budget=FAST, providers=["cpu"], peers=False)
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings, progress)
    assert report["interrupted"] is True
    assert [(r["config"], r["seq"]) for r in report["results"]] == [
        ("pytorch-fp32@cpu", 8), ("pytorch-bf16@cpu", 8), ("fp32@cpu", 8)]
    assert report["results"][2]["fidelity_cosine"] > 0.9999  # comparisons still computed on the partial run


def test_failed_configuration_is_recorded(tiny_artifact, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for op X")

    monkeypatch.setattr(measure, "signature", broken)
    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False, baselines=False)
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    assert report["configs"][0]["status"] == "failed"
    assert report["configs"][0]["reason"] == "RuntimeError: no kernel for op X"


def test_seq_over_model_limit_is_skipped(tiny_artifact):
    settings = Settings(batches=[1], seqs=[8, 4096], threads=1, budget=FAST, providers=["cpu"], peers=False,
                        baselines=False)
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    assert report["skipped_shapes"][0]["seq"] == 4096 and "limit" in report["skipped_shapes"][0]["reason"]
    assert {r["seq"] for r in report["results"]} == {8}


def test_budget_by_iterations_and_seconds():
    calls: list[str] = []
    a, b = time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], Budget(warmup=2, iters=7, seconds=None),
                            block=3)
    assert len(a) == len(b) == 7
    # warm-up, then rounds: one untimed re-warm call + a block of timed calls each; the last block is cut to 7
    assert "".join(calls) == "aabb" + "aaaabbbb" + "aaaabbbb" + "aabb"
    (samples,) = time_interleaved([lambda: None], Budget(warmup=0, iters=None, seconds=0.01))
    assert len(samples) >= 5
    stats = summarize(samples, batch=4, seq=10)
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]


def test_suite_verdict_and_summary(tiny_report):
    import run_suite

    verdict = run_suite.verdict("minilm", tiny_report)
    assert verdict["shape_matches_bar"] is False and verdict["passed"] is False  # 1×128 was not measured
    args = run_suite.parse(["--models", "minilm", "--iters", "3"])
    assert args.iters == 3 and args.seq == [16, 64, 128, 256] and args.threads == 2 and not args.isolate
    md = run_suite.suite_markdown([verdict], {"minilm": "variants from onnxformer.quantize: none"}, args)
    assert "**shared with other jobs**" in md and "| minilm | fp32@cpu |" in md and "≥ 3×" in md
    assert "interleaved rounds" in md
    assert "python benchmarks/run_suite.py --models minilm --iters 3" in md


def test_isolated_run_matches_in_process(tiny_artifact):
    """One child process per configuration: same rows and fidelity as in-process, merged into one report."""
    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False, isolate=True)
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    assert [(c["name"], c["status"], c["kind"]) for c in report["configs"]] == [
        ("pytorch-fp32@cpu", "ok", "pytorch"), ("pytorch-bf16@cpu", "ok", "pytorch"), ("fp32@cpu", "ok", "variant")]
    rows = {r["config"]: r for r in report["results"]}
    assert rows["fp32@cpu"]["fidelity_cosine"] > 0.99999 and isinstance(rows["fp32@cpu"]["speedup_model_only"], float)
    assert rows["fp32@cpu"]["model_only"]["iterations"] == 3.0 and report["interrupted"] is False


def test_isolated_worker_failure_is_recorded(tiny_artifact):
    from onnxformer.benchmarks.isolation import run_isolated

    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False)
    fragment = run_isolated(tiny_artifact("bert", "feature-extraction"), settings, "int3@cpu", None)
    (config,) = fragment["configs"]
    assert config["status"] == "failed" and "worker process exited with 1" in config["reason"]
    assert "no configuration named 'int3@cpu'" in config["reason"]


def test_runner_refuses_external_data_outside_the_artifact(tiny_artifact, copy_artifact, monkeypatch):
    """A variant whose initializers point at '../x.bin' is refused by the benchmark's runner exactly as by
    Model.load: the same IntegrityError, before ONNX Runtime opens anything; the harness records it."""
    import onnxruntime
    from conftest import externalize

    from onnxformer.runtime import Model

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    externalize(art)
    externalize(art, rewrite="../x.bin")  # hashed again: only the location check stands in the way
    opened: list = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a))
    with pytest.raises(IntegrityError) as by_model:
        Model.load(art, provider="cpu")
    (candidate,) = variant_candidates(ArtifactContext(art, Manifest.load(art), 1, 1), None, ["cpu"])
    with pytest.raises(IntegrityError) as by_bench:
        candidate.load()
    assert str(by_bench.value) == str(by_model.value)
    assert "'..' leaves the artifact directory" in str(by_bench.value)
    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], peers=False, baselines=False)
    (config,) = run_benchmark(art, settings)["configs"]
    assert config["name"] == "fp32@cpu" and config["status"] == "failed"
    assert config["reason"] == f"IntegrityError: {by_model.value}"
    assert opened == []  # refused before ONNX Runtime saw a file


def _row(config: str, p50: float, cosine: float) -> dict:
    stats = {"p50_ms": p50, "min_ms": p50}
    return {"config": config, "batch": 1, "seq": 128, "fidelity_cosine": cosine, "model_only": stats, "end_to_end": stats}


def test_headline_tells_our_variants_from_peers_by_kind():
    """A peer named like one of ours ("openvino-int8") that is fastest is never reported as our best variant."""
    configs = [{"name": "pytorch-fp32@cpu", "kind": "pytorch", "device": "cpu", "precision": "fp32"},
               {"name": "openvino-int8@cpu", "kind": "peer", "device": "cpu", "precision": "int8"},
               {"name": "int8@cpu", "kind": "variant", "device": "cpu", "precision": "int8"}]
    report = {"configs": configs, "results": [_row("pytorch-fp32@cpu", 10.0, 1.0), _row("openvino-int8@cpu", 1.0, 0.999),
                                               _row("int8@cpu", 2.0, 0.999)]}
    add_comparisons(report)
    h = report["headline"]
    assert h["best_variant"] == "int8@cpu" and h["best_p50_ms"] == 2.0
    assert h["speedup_vs_pytorch_fp32"] == pytest.approx(5.0)
    assert report["headline_gpu"] is None


def test_a_peer_is_one_registry_entry(tiny_artifact, monkeypatch):
    """A new peer is one Peer in peers.PEERS. This one answers from a cache (faster than anything that computes)
    and is named like a variant; the report labels it, and our best variant is still ours."""
    import onnxruntime

    def load(ctx: ArtifactContext, workdir: Path, device: str) -> Runner:
        session = onnxruntime.InferenceSession(str(ctx.directory / "fp32" / "model.onnx"))
        names, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        cache: dict = {}

        def model_only(feeds: dict) -> dict:
            key = feeds["input_ids"].shape  # every shape's feeds are fixed
            if key not in cache:
                cache[key] = dict(zip(outputs, session.run(outputs, {k: feeds[k] for k in names})))
            return cache[key]

        return Runner(model_only, lambda texts: np.zeros(len(texts)), 0.0)

    monkeypatch.setattr(peers, "PEERS", (peers.Peer("openvino-int8", peers.PEER, "int8", ("cpu",), load, lambda ctx: None),))
    settings = Settings(batches=[1], seqs=[8], threads=1, budget=FAST, providers=["cpu"], baselines=False,
                        peers=["all"])
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    assert [(c["name"], c["kind"], c["status"]) for c in report["configs"]] == [
        ("openvino-int8@cpu", "peer", "ok"), ("fp32@cpu", "variant", "ok")]
    rows = {r["config"]: r for r in report["results"]}
    assert rows["openvino-int8@cpu"]["model_only"]["p50_ms"] < rows["fp32@cpu"]["model_only"]["p50_ms"]
    assert rows["openvino-int8@cpu"]["within_budget"]
    assert report["headline"]["best_variant"] == "fp32@cpu"


def test_a_script_peer_runs_in_its_own_process_even_in_process(tiny_artifact, monkeypatch, tmp_path):
    """A peer with its own environment (peers.Peer.script) is measured by its script in a child process, with
    --in-process too; this one is ONNX Runtime on the artifact's fp32 graph, so its outputs match fp32@cpu."""
    from onnxformer.benchmarks import peer_env

    script = tmp_path / "peer_demo.py"
    script.write_text(f"""import sys
sys.path.insert(0, {str(Path(peers.__file__).parent)!r})
import numpy as np, onnxruntime as ort
from peer_common import Loaded, main, session_options

def load(spec):
    s = ort.InferenceSession(spec["fp32_onnx"], session_options(spec["threads"]))
    run = lambda feeds: dict(zip(spec["output_names"], s.run(spec["output_names"], feeds)))
    return Loaded(run, lambda texts: np.zeros((len(texts), 1)), 1.0)

main(lambda spec: None, load)
""")
    env = peer_env.PeerEnv("demo", ())
    monkeypatch.setattr(peer_env, "ensure", lambda e: Path(sys.executable))
    monkeypatch.setattr(peers, "ensure", lambda e: Path(sys.executable))
    monkeypatch.setattr(peers, "PEERS", (peers.Peer("demo-fp32", peers.PEER, "fp32", ("cpu",), None, lambda ctx: None,
                                                    script=str(script), environment=env),))
    settings = Settings(batches=[2], seqs=[8], threads=1, budget=FAST, providers=["cpu"], baselines=False,
                        peers=["demo-fp32"])
    report = run_benchmark(tiny_artifact("bert", "feature-extraction"), settings)
    configs = {c["name"]: c for c in report["configs"]}
    assert configs["demo-fp32@cpu"]["status"] == "ok", configs
    assert configs["demo-fp32@cpu"]["libraries"]["onnxruntime"]  # what only a script's result carries
    rows = {r["config"]: r for r in report["results"]}
    assert rows["demo-fp32@cpu"]["fidelity_cosine"] > 0.99999 and rows["demo-fp32@cpu"]["model_only"]["iterations"] == 3.0
