"""Quantize stage: guarded fp16, int8 dynamic/static, per-task fidelity, the budget loop, bad input.

Tiny random models barely notice quantization (the residual stream dwarfs every MatMul), so the
budget tests use a "loud" tiny BERT whose encoder weights are scaled up ×30: int8 then visibly
hurts it, as it hurts real models. The fp16 guard test scales one FFN weight so that an activation
exceeds fp16's 65504.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxformer.artifact.manifest import MANIFEST_NAME, Manifest, load_manifest, verify_variant
from onnxformer.cli import main
from onnxformer.errors import QuantizationError
from onnxformer.quantize import fp16, int8
from onnxformer.quantize.fidelity import evaluation_feeds, run_model
from onnxformer.quantize.pipeline import optimize_artifact, quantize_artifact
from onnxformer.quantize.texts import calibration_texts, evaluation_texts


def _scaled_checkpoint(src: Path, dst: Path, scale_fn) -> Path:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(src)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale_fn(name, param)
    model.save_pretrained(dst)
    for f in src.iterdir():  # tokenizer files
        if f.suffix in (".txt", ".json") and f.name != "config.json":
            shutil.copy(f, dst / f.name)
    return dst


def _export(checkpoint: Path, out: Path) -> Path:
    from onnxformer.export import export_checkpoint

    export_checkpoint(str(checkpoint), out, task="feature-extraction")
    return out


@pytest.fixture(scope="session")
def loud_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    """Tiny BERT with encoder matrices ×30: full int8 misses a 0.99 min-cosine budget."""
    def loud(name, param):
        if "encoder" in name and name.endswith("weight") and param.dim() == 2:
            param.mul_(30.0)

    root = tmp_path_factory.mktemp("loud")
    ckpt = _scaled_checkpoint(tiny_checkpoint("bert"), root / "ckpt", loud)
    art = _export(ckpt, root / "artifact")
    optimize_artifact(art)
    return art


@pytest.fixture(scope="session")
def overflow_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    """Tiny BERT whose layer-0 FFN input projection is ×2e5: its output exceeds 65504, LayerNorm tames it."""
    def overflow(name, param):
        if name == "encoder.layer.0.intermediate.dense.weight":
            param.mul_(2e5)

    root = tmp_path_factory.mktemp("overflow")
    return _export(_scaled_checkpoint(tiny_checkpoint("bert"), root / "ckpt", overflow), root / "artifact")


def _snapshot(art: Path) -> bytes:
    return (art / MANIFEST_NAME).read_bytes()


def _verify_all(art: Path) -> Manifest:
    manifest = load_manifest(art)
    for name in manifest.variants:
        verify_variant(art, manifest, name)  # sha256 of every file matches
    return manifest


# ---------------------------------------------------------------------------------------------- texts

def test_texts_are_varied_and_disjoint():
    evaluation, calibration = evaluation_texts(), calibration_texts()
    assert len(evaluation) >= 30 and len(calibration) >= 30
    assert not set(evaluation) & set(calibration)
    assert any(len(t.split()) == 1 for t in evaluation) and any(len(t) > 400 for t in evaluation)
    assert any("def " in t for t in evaluation)  # code
    assert any(ord(c) > 0x3000 for t in evaluation for c in t)  # CJK


def test_vnni_detection(tmp_path):
    with_vnni, without = tmp_path / "a", tmp_path / "b"
    with_vnni.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_vnni\n")
    without.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert int8.has_vnni(with_vnni) and not int8.has_vnni(without)
    assert not int8.has_vnni(tmp_path / "missing")  # unknown CPU → reduce_range, the safe side


# ----------------------------------------------------------------------------------------------- fp16

def test_fp16_guard_keeps_overflowing_nodes_fp32(overflow_artifact, copy_artifact):
    from onnxruntime.transformers.onnx_model import OnnxModel

    art = copy_artifact(overflow_artifact)
    before = _snapshot(art)
    record = quantize_artifact(art, "fp16", budget=0.9).record
    guard = record.made_by["guard"]
    assert guard["max_abs_activation"] > 65504
    assert any("intermediate" in node or "Gelu" in node for node in guard["fp32_nodes"]), guard["fp32_nodes"]
    assert record.fidelity["finite"] and record.fidelity["min_cosine"] > 0.99
    manifest = _verify_all(art)
    assert set(manifest.variants) == {"fp32", "fp32-opt", "fp16"} and _snapshot(art) != before
    # fp32 inputs/outputs kept; the blocked node really is float32 inside the fp16 graph
    graph = onnx.load(str(art / "fp16" / "model.onnx")).graph
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in graph.output)
    feeds = fp16.guard_feeds(art, manifest, calibration_texts())
    assert all(np.isfinite(v).all() for out in run_model(art / "fp16" / "model.onnx", feeds) for v in out.values())
    # the guard is needed: an unguarded conversion of the same graph overflows to inf inside
    naive = OnnxModel(onnx.load(str(art / "fp32-opt" / "model.onnx")))
    naive.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True)
    naive.model.graph.output.extend(onnx.ValueInfoProto(name=o) for n in naive.model.graph.node for o in n.output)
    onnx.save(naive.model, art / "naive.onnx")
    values = [v for out in run_model(art / "naive.onnx", feeds[:3]) for v in out.values() if v.dtype.kind == "f"]
    assert not all(np.isfinite(v).all() for v in values)


def test_fp16_on_ordinary_model_guards_nothing(tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    record = quantize_artifact(art, "fp16").record
    assert record.made_by["guard"]["fp32_nodes"] == {}
    assert record.fidelity["min_cosine"] > 0.999 and record.providers == ["cuda"]
    _verify_all(art)


# ----------------------------------------------------------------------------------------------- int8

def test_int8_dynamic_on_fused_graph_budget_forces_exclusions(loud_artifact, copy_artifact):
    art = copy_artifact(loud_artifact)
    full = quantize_artifact(art, "int8", budget=0.01, smooth=False).record  # plain: smoothing would rescue it
    assert full.made_by["budget"]["excluded_nodes"] == []
    assert full.fidelity["min_cosine"] < 0.9995  # int8 really hurts the loud model (0.9991 fully quantized)
    graph = onnx.load(str(art / "int8" / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QAttention", "MatMulInteger", "BiasGelu"} <= ops  # fused + int8
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops  # expanded for the CPU (unfuse.py)
    assert full.made_by["per_channel"] and full.made_by["reduce_range"] == (not int8.has_vnni())

    record = quantize_artifact(art, "int8", budget=0.9995, smooth=False).record  # replaces the variant
    budget = record.made_by["budget"]
    assert budget["excluded_nodes"] and budget["met"]
    assert record.fidelity["min_cosine"] >= 0.9995 > full.fidelity["min_cosine"]
    graph = onnx.load(str(art / "int8" / "model.onnx")).graph
    kept = {n.name for n in graph.node if n.op_type in ("MatMul", "Attention")}
    assert set(budget["excluded_nodes"]) <= kept  # excluded nodes really stayed fp32
    assert record.speed_cpu["ratio"] > 0
    _verify_all(art)


def test_budget_search_builds_one_session_and_only_the_graph_it_keeps(loud_artifact, copy_artifact, monkeypatch,
                                                                     tmp_path):
    """Issue 26: the budget loop's trials run on one selectable session (no graph per sensitivity trial or per
    exclusion tried), the fp32 reference runs once, and the search picks what building every trial picked."""
    from onnxformer.quantize import budget, fidelity, recipes

    art = copy_artifact(loud_artifact)
    calls: dict[str, list] = {"quantize": [], "reference": [], "selectable": []}
    real_quantize, real_run, real_selectable = int8.quantize, fidelity.run_model, recipes.Selectable
    monkeypatch.setattr(int8, "quantize", lambda *a, **k: calls["quantize"].append(a[2].name) or real_quantize(*a, **k))
    monkeypatch.setattr(fidelity, "run_model", lambda m, *a, **k: calls["reference"].append(m) or real_run(m, *a, **k))
    monkeypatch.setattr(recipes, "Selectable", lambda *a, **k: calls["selectable"].append(real_selectable(*a, **k))
                        or calls["selectable"][-1])
    record = quantize_artifact(art, "int8", budget=0.9995, smooth=False).record
    # the reference outputs: computed once, reused by every trial
    assert [Path(m).parent.name for m in calls["reference"]].count("fp32") == 1
    excluded = record.made_by["budget"]["excluded_nodes"]
    assert excluded and calls["quantize"] == ["all", f"exclude-{len(excluded)}"]  # built: the first and the kept one
    (trials,) = calls["selectable"]  # one session for every sensitivity and exclusion trial
    texts, nodes = len(evaluation_texts()), record.made_by["budget"]["candidate_nodes"]
    ranked = min(texts, budget.SENSITIVITY_TEXTS)
    assert record.made_by["budget"]["sensitivity_texts"] == ranked
    assert trials.runs <= texts + 1 + nodes * ranked + len(excluded) * texts  # all, check, ranking, exclusions

    calls["quantize"].clear()
    monkeypatch.setattr(recipes.Int8Dynamic, "trials", lambda *a: None)  # every trial built and measured, as before
    again = shutil.copytree(loud_artifact, tmp_path / "again")
    built = quantize_artifact(again, "int8", budget=0.9995, smooth=False).record
    assert sum(name.startswith("only-") for name in calls["quantize"]) == nodes
    # ranked on its 8 worst texts, the order of near ties may differ; the nodes kept fp32 and the variant do not
    assert set(built.made_by["budget"]["excluded_nodes"]) == set(excluded) and built.fidelity == record.fidelity


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])  # classifiers: a Gemm head
def test_selectable_graph_runs_any_set_of_quantized_nodes_as_built(task, loud_artifact, tiny_artifact, tmp_path):
    art = loud_artifact if task == "feature-extraction" else tiny_artifact("bert", task)
    graph = art / ("fp32-opt" if task == "feature-extraction" else "fp32") / "model.onnx"
    source = int8.expanded_source(graph, tmp_path / "expanded" / "model.onnx")
    settings = int8.Int8Settings("dynamic", "cpu", reduce_range=not int8.has_vnni())
    nodes = int8.candidate_nodes(source, settings.op_types)
    trials = int8.Selectable(source, int8.quantize(source, settings, tmp_path / "all"), nodes, tmp_path / "s.onnx")
    assert set(trials.gates) == set(nodes)
    feeds = evaluation_feeds(art, load_manifest(art), evaluation_texts()[:6])
    for quantized in ([], nodes[:1], nodes[1::2]):
        excluded = [n for n in nodes if n not in quantized]
        want = run_model(int8.quantize(source, settings, tmp_path / f"q{len(quantized)}", excluded), feeds)
        for got, ref in zip(trials.run(quantized, feeds), want):
            for name in ref:
                np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4)


def test_budget_that_cannot_be_met_fails_with_best_fidelity(loud_artifact, copy_artifact):
    art = copy_artifact(loud_artifact)
    before = _snapshot(art)
    with pytest.raises(QuantizationError) as err:
        quantize_artifact(art, "int8", budget=1.0)
    message = str(err.value)
    assert "cannot meet the budget min_cosine >= 1.0" in message and "best min_cosine 0.9" in message
    assert "x the fp32 latency" in message and "kept in fp32" in message
    assert _snapshot(art) == before and not (art / "int8").exists()
    assert not list(art.glob(".quantize-*"))  # scratch removed


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_static_qdq(target, loud_artifact, copy_artifact, tmp_path):
    art = copy_artifact(loud_artifact)
    cal = tmp_path / "cal.txt"
    cal.write_text("\n".join(calibration_texts()[:12]) + "\n")
    record = quantize_artifact(art, "int8", mode="static", target=target, calibration=cal, method="percentile",
                               budget=0.05).record
    name = "int8-static" if target == "cpu" else "int8-trt"
    assert load_manifest(art).variants[name] == record
    graph = onnx.load(str(art / name / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    made_by = record.made_by
    assert made_by["calibration"] == "percentile" and made_by["calibration_texts"] == 10  # 2 of 12 held out:
    assert record.fidelity["user_texts"] == 2  # graded instead (--calibration alone: every fifth text)
    if target == "tensorrt":  # symmetric int8, from the unfused graph: no ORT contrib ops for TensorRT
        assert made_by["from"] == "fp32" and record.providers == ["tensorrt"]
        assert not ops & {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"}
        inits = {i.name: i for i in graph.initializer}
        zero_points = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in graph.node
                       if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
        assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
        weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
        assert weight_dq and all(onnx.helper.get_attribute_value(a) == 1  # per output channel of (K, N)
                                 for n in weight_dq for a in n.attribute if a.name == "axis")
    else:
        assert made_by["from"] == "fp32-opt" and "Attention" in ops
    _verify_all(art)


@pytest.mark.parametrize("task,metric", [("text-classification", "prob_agreement"),
                                         ("token-classification", "token_agreement"),
                                         ("question-answering", "span_agreement")])
def test_task_fidelity_metrics(task, metric, tiny_artifact, copy_artifact):
    art = copy_artifact(tiny_artifact("bert", task))
    record = quantize_artifact(art, "int8").record
    fidelity = record.fidelity
    assert 0.95 <= fidelity[metric] <= 1.0 and fidelity["finite"] and fidelity["texts"] == len(evaluation_texts())
    assert record.made_by["budget"]["metric"] == metric
    _verify_all(art)


def test_classifier_budget_is_on_the_probabilities_not_argmax_alone(tiny_artifact):
    """Issue 26, item 3: every argmax agrees, yet a score moves by 0.15: the classifier's budget metric (1 - max |Δp|
    of the manifest's softmax) misses its default floor, with argmax agreement and the logits cosine beside it."""
    from onnxformer.quantize.fidelity import Evaluation, compare, default_budget

    manifest = load_manifest(tiny_artifact("bert", "text-classification"))
    want = [{"logits": np.array([[2.0, 0.0, -1.0]], np.float32)}, {"logits": np.array([[0.0, 3.0, 0.0]], np.float32)}]
    got = [{"logits": np.array([[1.0, 0.0, -1.0]], np.float32)}, {"logits": np.array([[0.0, 3.0, 0.0]], np.float32)}]
    feeds = [{"attention_mask": np.ones((1, 4), np.int64)}] * 2
    fidelity = compare(manifest, feeds, want, got)
    softmax = lambda x: np.exp(x) / np.exp(x).sum()
    moved = np.abs(softmax(np.array([2.0, 0.0, -1.0])) - softmax(np.array([1.0, 0.0, -1.0]))).max()  # 0.15
    assert fidelity["argmax_agreement"] == 1.0 and fidelity["min_cosine"] > 0.9
    assert fidelity["max_prob_diff"] == pytest.approx(moved)
    score = Evaluation(manifest, feeds, want).score(fidelity)
    assert score == pytest.approx(1 - moved) and score < default_budget(manifest.task)


def test_classifier_is_graded_on_the_users_texts_too(tiny_artifact, copy_artifact, tmp_path):
    """--evaluation FILE: the user's texts are graded beside the shipped ones, and recorded as such."""
    art = copy_artifact(tiny_artifact("bert", "text-classification"))
    mine = tmp_path / "mine.txt"
    mine.write_text("refund my order now\nthe parcel never arrived\nfive stars, would buy again\n")
    fidelity = quantize_artifact(art, "int8", evaluation=mine, smooth=False).record.fidelity
    assert fidelity["user_texts"] == 3 and fidelity["texts"] == len(evaluation_texts()) + 3, fidelity
    assert "the user's" in fidelity["reference"] and 0.98 <= fidelity["prob_agreement"] <= 1.0
    assert {"max_prob_diff", "argmax_agreement", "min_cosine"} <= set(fidelity)


def test_calibration_file_alone_holds_out_every_fifth_text_for_grading(tmp_path):
    from onnxformer.quantize.texts import graded_texts

    lines = [f"customer message number {i}" for i in range(12)]
    (tmp_path / "calib.txt").write_text("\n".join(lines))
    calibrate, graded = graded_texts(tmp_path / "calib.txt")
    assert graded == [lines[4], lines[9]] and calibrate == [t for t in lines if t not in graded]
    assert graded_texts(None) == (calibration_texts(None), [])  # the packaged texts: nothing of the user's


def test_qa_pairs_each_text_with_a_context(tiny_artifact):
    art = tiny_artifact("bert", "question-answering")
    feeds = evaluation_feeds(art, load_manifest(art), ["Who?", "Alice went home."])
    assert (feeds[0]["token_type_ids"] == 1).any()  # a real (question, context) pair


# ------------------------------------------------------------------------------------------ bad input

def _bad_inputs(art: Path, tmp: Path) -> list[tuple[list[str], str]]:
    empty, binary = tmp / "empty.txt", tmp / "binary.txt"
    empty.write_text("\n  \n")
    binary.write_bytes(b"\xff\xfe\x00bad")
    d = str(art)
    return [
        (["quantize", str(tmp / "nowhere"), "--precision", "int8"], "does not exist"),
        (["quantize", d, "--precision", "int4"], "unknown precision 'int4'"),
        (["quantize", d, "--precision", "fp16", "--target", "cpu"], "no fp16 variant for --target cpu"),
        (["quantize", d, "--precision", "int8", "--target", "cuda"], "no int8 dynamic variant for --target cuda"),
        (["quantize", d, "--precision", "int8", "--mode", "dynamic", "--target", "tensorrt"], "valid:"),
        (["quantize", d, "--precision", "int8", "--target", "tpu"], "unknown target 'tpu'"),
        (["quantize", d, "--precision", "int8", "--mode", "static", "--calibration", str(empty)], "is empty"),
        (["quantize", d, "--precision", "int8", "--mode", "static", "--calibration", str(tmp / "no.txt")],
         "cannot read calibration file"),
        (["quantize", d, "--precision", "int8", "--mode", "static", "--calibration", str(binary)], "not UTF-8"),
        (["quantize", d, "--precision", "int8", "--mode", "static", "--method", "kmeans"], "unknown calibration method"),
        (["quantize", d, "--precision", "int8", "--evaluation", str(empty)], f"evaluation file {empty} is empty"),
        (["quantize", d, "--precision", "int8", "--method", "entropy"], "add --mode static"),
        (["quantize", d, "--precision", "int8", "--no-smooth", "--calibration", str(empty)],
         "dynamic int8 without smoothing measures its ranges"),
        (["quantize", d, "--precision", "int8", "--calibration", str(empty)], "is empty"),
        (["quantize", d, "--precision", "int8", "--mode", "static", "--no-smooth"], "--no-smooth applies to dynamic"),
        (["quantize", d, "--precision", "int8", "--budget", "0"], "--budget must be in (0, 1]"),
        (["quantize", d, "--precision", "int8", "--budget", "1.5"], "--budget must be in (0, 1]"),
        (["quantize", d, "--precision", "int8", "--budget", "-0.2"], "--budget must be in (0, 1]"),
        (["quantize", d, "--precision", "int8", "--budget", "nan"], "--budget must be in (0, 1]"),
        (["quantize", d, "--precision", "int8", "--budget", "high"], "--budget must be a number"),
        (["quantize", d, "--precision", "int8", "--from", "int8"], "already quantized"),
        (["quantize", d, "--precision", "int8", "--from", "fp99"], "variant 'fp99' is not in"),
    ]


def test_bad_input_is_one_line_and_leaves_manifest_identical(loud_artifact, copy_artifact, tmp_path, capsys):
    art = copy_artifact(loud_artifact)
    quantize_artifact(art, "int8", budget=0.01)  # so that `--from int8` names an existing, quantized variant
    files = sorted(p.relative_to(art) for p in art.rglob("*"))
    before = _snapshot(art)
    for argv, expected in _bad_inputs(art, tmp_path):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("onnxformer: error:") and "\n" not in err and expected in err, (argv, err)
        assert _snapshot(art) == before, argv
        assert sorted(p.relative_to(art) for p in art.rglob("*")) == files, argv
    assert main(["quantize", str(tmp_path), "--precision", "int8"]) == 1  # a directory without manifest
    assert "no manifest.json" in capsys.readouterr().err


def test_already_quantized_fp32_file_is_refused(loud_artifact, copy_artifact, capsys):
    """An artifact whose fp32 graph is secretly quantized (and re-hashed): refused by inspecting the graph."""
    from onnxformer.artifact.manifest import variant_record

    art = copy_artifact(loud_artifact)
    quantize_artifact(art, "int8", budget=0.01)
    shutil.copy(art / "int8" / "model.onnx", art / "fp32" / "model.onnx")
    manifest = load_manifest(art)
    old = manifest.variants["fp32"]
    manifest.variants["fp32"] = variant_record(art, "fp32/model.onnx", precision="fp32", providers=old.providers,
                                               made_by=old.made_by, graph=old.graph)
    manifest.save(art)
    before = _snapshot(art)
    for argv in (["optimize", str(art)], ["quantize", str(art), "--precision", "fp16"]):
        assert main(argv) == 1
        assert "already contains quantized operators" in capsys.readouterr().err
        assert _snapshot(art) == before


def test_cli_quantize_then_manifest_verifies(tiny_artifact, copy_artifact, capsys):
    art = copy_artifact(tiny_artifact("roberta", "feature-extraction"))
    assert main(["quantize", str(art), "--precision", "int8"]) == 0  # fuses on the fly, publishes both
    assert "int8: min_cosine" in capsys.readouterr().err
    manifest = _verify_all(art)
    assert manifest.variants["int8"].made_by["from"] == "fp32-opt"
    assert manifest.variants["int8"].made_by["fused_ops"]["Attention"] == 2


def test_build_stage_rows(tiny_artifact, copy_artifact):
    from onnxformer.quantize.stage import quantize_stage

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    rows = quantize_stage(art, lambda _: None)
    assert [r["variant"] for r in rows] == ["fp32-opt", "fp16", "int8"]
    assert "Attention×2" in rows[0]["detail"] and all("min_cosine" in r["detail"] for r in rows)
    assert set(_verify_all(art).variants) == {"fp32", "fp32-opt", "fp16", "int8"}


def test_every_recipe_is_chosen_through_the_registry():
    from onnxformer.quantize import plan as variants
    from onnxformer.quantize import recipes

    for recipe in variants.quantizers():  # each (precision, mode, target) names exactly one recipe
        assert variants.plan(recipe.precision, recipe.mode, recipe.target) is recipe
    assert [variants.plan(p).name for p in ("fp16", "int8")] == ["fp16", "int8"]
    assert variants.generative_names() == ("fp16", "int8", "int4")
    assert len({(r.name, r.generative) for r in recipes.RECIPES}) == len(recipes.RECIPES)


def test_variants_record_whether_their_graph_is_fused(tiny_artifact, copy_artifact):
    from onnxformer.artifact.manifest import FUSED, UNFUSED

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    quantize_artifact(art, "int8", budget=0.01)  # fuses fp32-opt on the way
    quantize_artifact(art, "int8", target="tensorrt", budget=0.01)
    graphs = {name: v.graph for name, v in _verify_all(art).variants.items()}
    assert graphs == {"fp32": graphs["fp32"], "fp32-opt": FUSED, "int8": FUSED, "int8-trt": UNFUSED}


def test_decoder_tasks_are_refused_and_skipped_by_build(tiny_artifact, copy_artifact, capsys):
    from onnxformer.quantize.stage import quantize_stage

    art = copy_artifact(tiny_artifact("bert", "feature-extraction"))
    manifest = load_manifest(art)
    manifest.task = "text-generation"
    manifest.save(art)
    before = _snapshot(art)
    assert main(["quantize", str(art), "--precision", "int8"]) == 1
    assert "quantize-generative" in capsys.readouterr().err and _snapshot(art) == before
    assert quantize_stage(art, lambda _: None)[0]["detail"].startswith("skipped")


# ------------------------------------------------------------------------------------------ smoothing

def test_int8_error_simulates_onnxruntime_dynamic_matmul(tmp_path):
    """The α search scores candidates with a simulation of ORT's dynamic int8 MatMul: it must agree with ORT."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxformer.quantize.smoothing import int8_error
    from onnxformer.runtime.session import create_session

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    x[:, 3] *= 60.0  # one outlier channel, as in real encoders
    w = rng.normal(size=(64, 32)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", per_channel=True, reduce_range=False,
                     weight_type=QuantType.QInt8)
    got = create_session(tmp_path / "q.onnx").run(None, {"x": x})[0]
    exact = x @ w
    measured = float(np.sum((got - exact) ** 2) / np.sum(exact ** 2))
    assert measured > 1e-4  # the outlier really hurts
    assert int8_error(x, w) == pytest.approx(measured, rel=0.05)


def test_smoothing_is_exact_in_fp32_and_cuts_int8_error(loud_artifact, tmp_path):
    from onnxformer.quantize import smoothing

    manifest = load_manifest(loud_artifact)
    source = loud_artifact / "fp32-opt" / "model.onnx"
    feeds = evaluation_feeds(loud_artifact, manifest, calibration_texts())
    nodes = int8.candidate_nodes(source, int8.DYNAMIC_OPS)
    path, plan = smoothing.smooth(source, nodes, feeds, tmp_path / "s" / "model.onnx")
    record = plan.record(len(feeds))
    assert record["smoothed_nodes"] > 0 and record["calibration_texts"] == len(calibration_texts())
    for node in plan.scales:  # every smoothing applied was measured to help that node
        assert plan.error_after[node] < plan.error_before[node]
    graph = onnx.load(str(path)).graph
    muls = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("_smooth")]
    assert len(muls) == record["mul_nodes"]
    assert record["folded_into_attention"] > 0  # attention output projections fold into V: no Mul
    # Nodes reading one activation (Q, K and V) are smoothed as one: same α, and one Mul that all of them read
    original = onnx.load(str(source)).graph
    by_input: dict[str, set[str]] = {}
    for n in original.node:
        if n.name in nodes:
            by_input.setdefault(n.input[0], set()).add(n.name)
    for group in by_input.values():
        assert len({plan.alphas[n] for n in group}) == 1
    for m in muls:
        assert {n.name for n in graph.node if m.output[0] in n.input} == by_input[m.input[0]]
    texts = evaluation_feeds(loud_artifact, manifest, evaluation_texts()[:8])
    for a, b in zip(run_model(source, texts), run_model(path, texts)):  # same function in fp32
        for name in a:
            assert np.allclose(a[name], b[name], rtol=1e-3, atol=1e-3 * float(np.abs(a[name]).max()))


@pytest.fixture(scope="session")
def outlier_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    """The loud BERT, plus attention LayerNorms that blow up two channels ×8 (the outliers of trained encoders)."""
    def outliers(name, param):
        if "encoder" in name and name.endswith("weight") and param.dim() == 2:
            param.mul_(30.0)
        if name.endswith("attention.output.LayerNorm.weight"):
            param[[1, 5]] *= 8.0

    root = tmp_path_factory.mktemp("outliers")
    art = _export(_scaled_checkpoint(tiny_checkpoint("bert"), root / "ckpt", outliers), root / "artifact")
    optimize_artifact(art)
    return art


def test_int8_records_smoothing_and_no_smooth_skips_it(outlier_artifact, copy_artifact):
    """Smoothing is kept only when it measures better end to end (the budget metric, the worst text), else
    rejected with both numbers; which one depends on the CPU (reduce_range's 7-bit weights on CPUs without VNNI)."""
    art = copy_artifact(outlier_artifact)
    smoothed = quantize_artifact(art, "int8", budget=0.01).record
    plain = quantize_artifact(art, "int8", budget=0.01, smooth=False).record
    record = smoothed.made_by["smoothing"]
    assert "smoothing" not in plain.made_by
    assert smoothed.fidelity["min_cosine"] >= plain.fidelity["min_cosine"]  # measured, end to end: never worse
    if record["method"] == "rejected":
        assert record["tried"]["smoothed_nodes"] > 0 and "smoothed < " in record["reason"]
        assert smoothed.fidelity["min_cosine"] == plain.fidelity["min_cosine"]  # the plain graph, published
    else:
        assert record["smoothed_nodes"] > 0 and smoothed.fidelity["min_cosine"] > plain.fidelity["min_cosine"]
    _verify_all(art)
