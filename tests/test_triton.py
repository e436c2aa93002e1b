"""`onnxformer triton`: the repository layout, and a config.pbtxt that parses with tritonclient's schema."""
from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from onnxformer.artifact.files import sha256_file
from onnxformer.cli import main
from onnxformer.serve.statuses import ServingError
from onnxformer.serve.triton import TritonOptions, export_triton


def _parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_onnxruntime_repository(tiny_artifact, tmp_path):
    artifact = tiny_artifact("bert", "feature-extraction")
    manifest = json.loads((artifact / "manifest.json").read_text())
    target = export_triton(artifact, tmp_path / "repo", TritonOptions(instances=2, max_batch_size=16))
    assert target == tmp_path / "repo" / manifest["name"]
    config = _parse(target / "config.pbtxt")
    assert config.name == manifest["name"] and config.backend == "onnxruntime" and config.max_batch_size == 16
    assert [i.name for i in config.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.data_type == mc.TYPE_INT64 and list(i.dims) == [-1] for i in config.input)
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("last_hidden_state", mc.TYPE_FP32, [-1, 32])]
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, mc.ModelInstanceGroup.KIND_CPU)]
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert sha256_file(target / "1" / "model.onnx") == manifest["variants"]["fp32"]["sha256"]


def test_tensorrt_repository_for_gpu(tiny_artifact, tmp_path):
    artifact = tiny_artifact("bert", "text-classification")
    options = TritonOptions(backend="tensorrt", precision="fp16", max_batch_size=8, name="clf")
    config = _parse(export_triton(artifact, tmp_path, options) / "config.pbtxt")
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [3])]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    params = dict(accel.parameters)
    assert accel.name == "tensorrt" and params["precision_mode"] == "FP16"
    assert params["trt_engine_cache_enable"] == "1" and params["trt_engine_cache_path"].startswith("/tmp/onnxformer-trt/clf-")
    assert params["max_workspace_size_bytes"] == str(1 << 30)
    assert params["trt_profile_max_shapes"] == "input_ids:8x128,attention_mask:8x128,token_type_ids:8x128"


def test_refusals(tiny_artifact, tmp_path):
    artifact = tiny_artifact("bert", "feature-extraction")
    export_triton(artifact, tmp_path, TritonOptions(name="m"))
    with pytest.raises(ServingError, match="--overwrite"):
        export_triton(artifact, tmp_path, TritonOptions(name="m"))
    export_triton(artifact, tmp_path, TritonOptions(name="m", overwrite=True))
    with pytest.raises(Exception, match="variant 'int4' not in this artifact"):
        export_triton(artifact, tmp_path, TritonOptions(variant="int4", name="x"))
    with pytest.raises(ServingError, match="--name"):
        export_triton(artifact, tmp_path, TritonOptions(name="../escape"))
    with pytest.raises(ServingError, match="--instances"):
        export_triton(artifact, tmp_path, TritonOptions(instances=0))


def test_cli(tiny_artifact, tmp_path, capsys):
    artifact = tiny_artifact("bert", "feature-extraction")
    assert main(["triton", str(artifact), "--repo", str(tmp_path), "--name", "emb", "--max-batch-size", "4"]) == 0
    assert _parse(tmp_path / "emb" / "config.pbtxt").max_batch_size == 4
    assert main(["triton", str(tmp_path / "missing"), "--repo", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_generative_artifacts_are_refused_in_one_line(gen_artifact, tmp_path, capsys, family):
    """Issue 16, defect 6: GPT-2's logits_to_keep had no dims and T5's config named the wrong graph's inputs."""
    artifact = gen_artifact(family)
    capsys.readouterr()  # what building the fixture printed (transformers' "Writing model shards" bar) is not ours
    assert main(["triton", str(artifact), "--repo", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not one Triton model; serve it with `onnxformer serve`" in err
    assert not any(tmp_path.iterdir())


def test_configs_are_checked_against_the_graph(tiny_artifact, copy_artifact, tmp_path):
    """Triton's rules, not only the protobuf schema: names, types and dims must match the ONNX graph."""
    import dataclasses

    from onnxformer.artifact.manifest import Manifest
    from onnxformer.serve.triton import check_config, model_config

    artifact = tiny_artifact("bert", "feature-extraction")
    manifest = Manifest.load(artifact)
    graph = artifact / manifest.variants["fp32"].file
    check_config(model_config(manifest, "m", TritonOptions()), graph)  # what export writes passes
    renamed = dataclasses.replace(manifest, inputs=[dataclasses.replace(manifest.inputs[0], name="ids"),
                                                    *manifest.inputs[1:]])
    with pytest.raises(ServingError, match="do not match the graph's"):
        check_config(model_config(renamed, "m", TritonOptions()), graph)
    retyped = dataclasses.replace(manifest, inputs=[dataclasses.replace(manifest.inputs[0], dtype="int32"),
                                                    *manifest.inputs[1:]])
    with pytest.raises(ServingError, match="the config says TYPE_INT32, the graph tensor\\(int64\\)"):
        check_config(model_config(retyped, "m", TritonOptions()), graph)
    flat = dataclasses.replace(manifest, outputs=[dataclasses.replace(manifest.outputs[0], shape=["batch"])])
    with pytest.raises(ServingError, match="Triton needs a batch dimension plus at least one more"):
        check_config(model_config(flat, "m", TritonOptions()), graph)


def test_python_backend_repository(tiny_artifact, tmp_path):
    """--backend python: text in, the task's outputs out; the artifact copy is one variant and verifies."""
    from onnxformer.runtime import Model

    artifact = tiny_artifact("bert", "text-classification")
    target = export_triton(artifact, tmp_path, TritonOptions(backend="python", name="clf", threads=1,
                                                             python_path=(str(tmp_path),)))
    config = _parse(target / "config.pbtxt")
    assert config.backend == "python" and config.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in config.input] == [
        ("text", mc.TYPE_STRING, [1], False), ("text_pair", mc.TYPE_STRING, [1], True)]
    assert [o.name for o in config.output] == ["logits", "label", "score"]
    assert config.parameters["variant"].string_value == "fp32" and config.parameters["threads"].string_value == "1"
    env = json.loads((target / "1" / "environment.json").read_text())
    assert env["paths"] == [str(tmp_path.resolve())] and env["python"] == list(__import__("sys").version_info[:2])
    assert (target / "1" / "model.py").read_text().startswith('"""Triton Python backend model')
    copy = target / "1" / "artifact"
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == ["fp32"]
    Model.load(copy, variant="fp32")  # sha256-verified, as initialize loads it
    with pytest.raises(ServingError, match="--python-path"):
        export_triton(artifact, tmp_path, TritonOptions(backend="python", name="x", python_path=("/nope",)))
    tagger = tiny_artifact("bert", "token-classification")
    with pytest.raises(ServingError, match="--backend python serves"):
        export_triton(tagger, tmp_path, TritonOptions(backend="python", name="tag"))


@pytest.mark.parametrize("which", ["minilm", "tiny"])
def test_pooled_graph_answers_the_vectors_of_model_embed(which, minilm_artifact, tiny_artifact, tmp_path):
    """--pooled: Triton's onnxruntime backend gets `embedding` (pooled, normalised as the manifest says) from the
    graph itself; run here with ONNX Runtime on a padded batch, as Triton would run it."""
    import onnxruntime as ort

    from onnxformer.runtime import Model

    artifact = minilm_artifact if which == "minilm" else tiny_artifact("bert", "feature-extraction")
    target = export_triton(artifact, tmp_path, TritonOptions(pooled=True, name="emb"))
    config = _parse(target / "config.pbtxt")
    assert [(o.name, o.data_type, len(o.dims)) for o in config.output] == [("embedding", mc.TYPE_FP32, 1)]
    model = Model.load(artifact, variant="fp32")
    texts = ["short", "a much longer sentence that pads the first one", "middle length text"]
    feeds = model.tokenizer.encode(texts).feeds
    session = ort.InferenceSession(str(target / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], {i.name: feeds[i.name] for i in session.get_inputs()})
    np.testing.assert_allclose(got, model.embed(texts), atol=1e-5)
    with pytest.raises(ServingError, match="--pooled is for embedding models"):
        export_triton(tiny_artifact("bert", "text-classification"), tmp_path, TritonOptions(pooled=True, name="c"))
