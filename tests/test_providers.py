"""Provider resolution with a faked availability list, TensorRT options, strict mode, and variant choice on
synthetic manifests. All plain data: no GPU needed."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from onnxformer.artifact.manifest import FORMAT, SCHEMA_VERSION, Manifest, TensorSpec
from onnxformer.errors import ArtifactError, ProviderError
from onnxformer.runtime import providers
from onnxformer.runtime.choice import choose

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_ONLY = ["CPUExecutionProvider"]
INPUTS = [{"name": n, "dtype": "int64", "shape": ["batch_size", "sequence_length"],
           "dynamic_axes": {"0": "batch_size", "1": "sequence_length"}}
          for n in ("input_ids", "attention_mask", "token_type_ids")]


def manifest(task: str = "feature-extraction", **variants) -> Manifest:
    base = {"fp32": {"file": "fp32/model.onnx", "sha256": "ab" * 32, "precision": "fp32",
                     "providers": ["tensorrt", "cuda", "cpu"], "fidelity": {"max_abs_diff": {"x": 1e-6}}}}
    base.update({k.replace("_", "-"): v for k, v in variants.items()})
    return Manifest.from_json(raw_manifest(task, base))


def raw_manifest(task: str, variants: dict) -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "task": task, "architecture": {"model_type": "bert"},
            "inputs": INPUTS, "outputs": [], "tokenizer": {"files": {}, "max_length": 256}, "variants": variants}


def rec(precision: str, providers_: list[str], **fidelity) -> dict:
    return {"file": "x/model.onnx", "sha256": "cd" * 32, "precision": precision, "providers": providers_,
            "fidelity": fidelity}


def resolve(requested, available, gpu, strict=False):
    return providers.resolve(requested, lambda name: name, strict=strict, available=available, gpu=gpu)


# --- resolution ------------------------------------------------------------------------------------------------

def test_auto_order_is_tensorrt_cuda_cpu():
    assert resolve("auto", ALL, gpu=True) == "tensorrt"
    assert resolve("auto", ALL[1:], gpu=True) == "cuda"
    assert resolve("auto", CPU_ONLY, gpu=False) == "cpu"


def test_each_fallback_is_logged_with_its_reason(caplog):
    with caplog.at_level(logging.INFO, logger="onnxformer.runtime"):
        assert resolve("auto", ALL, gpu=False) == "cpu"  # GPU build installed, but no device
    messages = [r.getMessage() for r in caplog.records]
    assert any("tensorrt skipped: no NVIDIA GPU device is present" in m for m in messages)
    assert any("cuda skipped: no NVIDIA GPU device is present" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onnxformer.runtime"):
        assert resolve(["cuda", "cpu"], CPU_ONLY, gpu=False) == "cpu"  # named by the user: a warning
    assert "CUDAExecutionProvider is not in this onnxruntime build" in caplog.text


def test_user_names_one_or_a_list_in_any_spelling():
    assert resolve("cpu", ALL, gpu=True) == "cpu"
    assert resolve(["CUDAExecutionProvider", "cpu"], ALL, gpu=True) == "cuda"
    assert providers.provider_names(["cpu", "CPU", "CPUExecutionProvider"]) == ["cpu"]
    with pytest.raises(ProviderError, match="unknown provider 'rocm'"):
        resolve("rocm", ALL, gpu=True)
    with pytest.raises(ProviderError, match="provider list is empty"):
        resolve([], ALL, gpu=True)


def test_strict_turns_a_fallback_into_an_error():
    with pytest.raises(ProviderError, match="tensorrt skipped: no NVIDIA GPU.*strict=True"):
        resolve("auto", ALL, gpu=False, strict=True)
    assert resolve("cpu", CPU_ONLY, gpu=False, strict=True) == "cpu"


def test_no_provider_left_lists_every_reason():
    with pytest.raises(ProviderError, match="no execution provider.*tensorrt skipped.*cuda skipped"):
        resolve(["tensorrt", "cuda"], CPU_ONLY, gpu=False)


def test_variant_unsupported_is_a_logged_fallback(caplog):
    m = manifest(fp16=rec("fp16", ["cuda"], min_cosine=0.9999))

    def attempt(name):
        from onnxformer.runtime.choice import check_explicit
        return name, check_explicit(m, name, "fp16").variant

    with caplog.at_level(logging.INFO, logger="onnxformer.runtime"):
        assert providers.resolve("auto", attempt, available=ALL, gpu=True) == ("cuda", "fp16")
    assert "tensorrt skipped: variant fp16 targets cuda, not tensorrt" in caplog.text
    with pytest.raises(ProviderError, match="fp16, which cpu does not run"):
        providers.resolve("cpu", attempt, available=ALL, gpu=True)


# --- TensorRT options ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,fp16,int8", [("fp32", False, False), ("fp16", True, False), ("int8", True, True)])
def test_tensorrt_options_from_the_manifest(tmp_path, precision, fp16, int8):
    m = manifest(x=rec(precision, ["tensorrt"]))
    record = m.variants["x"]
    opts = providers.tensorrt_options(m, record, max_batch=16, cache_root=tmp_path, ort_version="1.20.1",
                                      gpu="NVIDIA A10G")
    assert opts["trt_fp16_enable"] is fp16 and opts["trt_int8_enable"] is int8
    assert opts["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1"
    assert opts["trt_profile_opt_shapes"] == "input_ids:8x128,attention_mask:8x128,token_type_ids:8x128"
    assert opts["trt_profile_max_shapes"] == "input_ids:16x256,attention_mask:16x256,token_type_ids:16x256"
    cache = Path(opts["trt_engine_cache_path"])
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_timing_cache_path"] == str(cache) and cache.parent == tmp_path
    assert cache.name == f"{'cd' * 8}-{precision}-ort1.20.1-NVIDIA-A10G"


def test_engine_cache_key_changes_with_model_ort_and_gpu(tmp_path):
    key = providers.engine_cache_dir
    base = key(tmp_path, "a" * 64, "fp16", "1.20.1", "A10G")
    assert len({base, key(tmp_path, "b" * 64, "fp16", "1.20.1", "A10G"), key(tmp_path, "a" * 64, "fp16", "1.21.0", "A10G"),
                key(tmp_path, "a" * 64, "fp16", "1.20.1", "L4"), key(tmp_path, "a" * 64, "int8", "1.20.1", "A10G")}) == 5


def test_profiles_keep_static_dims_and_skip_static_inputs():
    inputs = [TensorSpec("ids", "int64", ["b", 77], {"0": "b"}), TensorSpec("fixed", "int64", [1, 4], {})]
    assert providers.profile_options(providers.shape_profile(inputs, 4, 77)) == {"trt_profile_min_shapes": "ids:1x77",
                                                       "trt_profile_opt_shapes": "ids:4x77",
                                                       "trt_profile_max_shapes": "ids:4x77"}


def test_gpu_session_chain_keeps_cuda_and_cpu_behind():
    chain = providers.session_providers("tensorrt", {"trt_fp16_enable": True})
    assert [p for p, _ in chain] == ALL and chain[0][1] == {"trt_fp16_enable": True}
    assert providers.session_providers("cpu", {}) == [("CPUExecutionProvider", {})]


# --- variant choice ------------------------------------------------------------------------------------------

def full_manifest(int8_cos: float = 0.998) -> dict:
    return manifest(
        fp32_opt={**rec("fp32", ["cuda", "cpu"], min_cosine=0.999999), "graph": "fused"},
        fp16=rec("fp16", ["cuda"], min_cosine=0.9999),
        fp16_trt=rec("fp16", ["tensorrt"], min_cosine=0.9998),
        int8=rec("int8", ["cpu"], min_cosine=int8_cos, mean_cosine=0.999),
        int8_static={**rec("int8", ["cpu"], min_cosine=0.97), "speed_cpu": {"ratio": 0.3}},
        int8_trt=rec("int8", ["tensorrt"], min_cosine=0.98),
    )


def test_cpu_picks_int8_within_budget_else_fp32_opt():
    assert choose(full_manifest(), "cpu").variant == "int8"
    choice = choose(full_manifest(int8_cos=0.95), "cpu")
    assert choice.variant == "fp32-opt"
    assert "int8 min_cosine 0.9500 < budget 0.997" in choice.reason
    assert choose(full_manifest(), "cpu", budget=0.96).variant == "int8-static"  # measured faster, now eligible
    assert choose(full_manifest(), "cpu", budget=0.9999999).variant == "fp32"  # even fp32-opt misses it


def test_reference_fp32_is_always_eligible_and_unmeasured_variants_never():
    m = manifest(int8=rec("int8", ["cpu"]))  # no fidelity recorded
    choice = choose(m, "cpu")
    assert choice.variant == "fp32" and "int8 has no recorded min_cosine" in choice.reason
    assert choose(manifest(), "cpu", budget=1.0).variant == "fp32"


def test_gpu_choices():
    m = full_manifest()
    assert choose(m, "cuda").variant == "fp16"
    assert choose(m, "tensorrt").variant == "fp16-trt"  # int8-trt misses the default 0.99
    assert choose(m, "tensorrt", budget=0.97).variant == "int8-trt"
    assert choose(manifest(), "tensorrt").variant == "fp32"


def test_budget_per_task_metric_and_dict_budget():
    m = manifest("text-classification", int8=rec("int8", ["cpu"], prob_agreement=0.985, min_cosine=0.9))
    assert choose(m, "cpu").variant == "int8"  # default floor 0.98 on prob_agreement (1 - max |Δp|)
    assert choose(m, "cpu", budget={"prob_agreement": 0.98, "min_cosine": 0.99}).variant == "fp32"
    with pytest.raises(ProviderError, match="not a fidelity floor"):
        choose(m, "cpu", budget=1.5)


def test_malformed_records_are_refused_at_load_not_crashed_on():
    # The typed manifest refuses a malformed variant record in one line naming the field, before any choice.
    for bad, field in ((dict(weird="not a dict"), "variants.weird"), (dict(int8={"precision": "int8"}), "variants.int8.file"),
                       (dict(odd={**rec("int4", ["cpu"]), "fidelity": 3}), "variants.odd.fidelity")):
        with pytest.raises(ArtifactError, match=field.replace(".", r"\.")):
            manifest(**bad)
    m = manifest(odd={**rec("int4", ["cpu"]), "fidelity": None})  # null fidelity: nothing recorded
    assert choose(m, "cpu").variant == "fp32"
    with pytest.raises(ProviderError, match="no variant of this artifact suits cuda"):
        choose(Manifest.from_json(raw_manifest("feature-extraction", {"int8": rec("int8", ["cpu"], min_cosine=1.0)})),
               "cuda")


def test_loader_builds_tensorrt_options_from_a_real_manifest(tiny_artifact, tmp_path):
    from onnxformer.artifact.manifest import load_manifest
    from onnxformer.runtime.loader import LoadOptions, provider_options

    m = load_manifest(tiny_artifact("bert"))
    opts = provider_options(m, m.variants["fp32"], "tensorrt", LoadOptions(max_batch_size=4, trt_cache=tmp_path))
    names = m.input_names
    assert opts["trt_profile_max_shapes"] == ",".join(f"{n}:4x128" for n in names)  # tiny model: 128 tokens
    assert opts["trt_fp16_enable"] is False and Path(opts["trt_engine_cache_path"]).parent == tmp_path
    assert m.variants["fp32"].sha256[:16] in opts["trt_engine_cache_path"]
    assert provider_options(m, m.variants["fp32"], "cuda", LoadOptions())["device_id"] == 0


def test_strict_load_on_a_cpu_machine(tiny_artifact):
    from onnxformer.runtime import Model

    assert Model.load(tiny_artifact("bert"), provider="cpu", strict=True).provider == "cpu"
    if providers.gpu_present():
        pytest.skip("a GPU is present: cuda would not fall back")
    with pytest.raises(ProviderError, match="strict=True"):
        Model.load(tiny_artifact("bert"), provider=["cuda", "cpu"], strict=True)


# --- TensorRT 10 vs 11 (issue 18) -------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_precision_options_per_major(precision):
    """TensorRT 10: weakly typed, ORT's flags become kFP16/kINT8 (LayerNorm pinned fp32); 11: strongly typed, none."""
    ten = providers.tensorrt_precision_options(precision, 10)
    assert ten["trt_fp16_enable"] is (precision != "fp32") and ten["trt_int8_enable"] is (precision == "int8")
    assert ten.get("trt_layer_norm_fp32_fallback", False) is (precision != "fp32")
    assert providers.tensorrt_precision_options(precision, 11) == {}
    with pytest.raises(ProviderError, match="TensorRT 12 is not supported; .* TensorRT 10 and 11"):
        providers.tensorrt_precision_options(precision, 12)


def test_tensorrt_11_options_carry_no_precision_flags(tmp_path):
    m = manifest(x=rec("fp16", ["tensorrt"]), y=rec("fp32", ["tensorrt"]))
    opts = providers.tensorrt_options(m, m.variants["x"], max_batch=8, cache_root=tmp_path, ort_version="1.31.1",
                                      gpu="NVIDIA H200", trt_major=11)
    assert not {k for k in opts if k in ("trt_fp16_enable", "trt_int8_enable", "trt_layer_norm_fp32_fallback")}
    assert opts["trt_profile_max_shapes"].startswith("input_ids:8x256")
    assert Path(opts["trt_engine_cache_path"]).name.endswith("-fp16-trt11-ort1.31.1-NVIDIA-H200")
    ten = providers.tensorrt_options(m, m.variants["x"], max_batch=8, cache_root=tmp_path, ort_version="1.31.1",
                                     gpu="NVIDIA H200", trt_major=10)
    assert ten["trt_fp16_enable"] and Path(ten["trt_engine_cache_path"]).name.endswith("-fp16-ort1.31.1-NVIDIA-H200")
    with pytest.raises(ProviderError, match="TensorRT 11 cannot build a fp16 engine from the fp32 graph"):
        providers.tensorrt_options(m, m.variants["y"], max_batch=8, cache_root=tmp_path, ort_version="1.31.1",
                                   gpu="g", precision="fp16", trt_major=11)
    assert providers.engine_precisions("fp32", 10) == ["fp32", "fp16"]
    assert providers.engine_precisions("fp32", 11) == ["fp32"] and providers.engine_precisions("int8", 11) == ["int8"]


def test_tensorrt_major_from_the_environment(monkeypatch):
    monkeypatch.setenv("ONNXFORMER_TRT_MAJOR", "11")
    assert providers.tensorrt_major() == 11
    monkeypatch.delenv("ONNXFORMER_TRT_MAJOR")
    assert providers.tensorrt_major() in (10, 11)  # 10 where no libnvinfer loads (this CPU machine)


def test_tensorrt_major_is_the_one_the_ep_links(tmp_path, monkeypatch):
    monkeypatch.delenv("ONNXFORMER_TRT_MAJOR", raising=False)
    ep = tmp_path / "libonnxruntime_providers_tensorrt.so"
    ep.write_bytes(b"\x7fELF...libcudart.so.13\x00libnvinfer.so.10\x00libnvonnxparser.so.10\x00")  # as 1.31.1's NEEDED
    assert providers.tensorrt_major(ep) == 10
    ep.write_bytes(b"\x7fELF...libnvinfer.so.11\x00")
    assert providers.tensorrt_major(ep) == 11


def test_a_classifier_graded_on_argmax_alone_is_not_chosen():
    """Issue 26, item 3: argmax agreement 1.0 passed an int8 whose logits cosine was 0.959. A classifier variant
    is chosen on its probabilities; one recorded with argmax agreement alone (older manifests) is passed over."""
    m = manifest("text-classification", int8=rec("int8", ["cpu"], argmax_agreement=1.0, min_cosine=0.959))
    choice = choose(m, "cpu")
    assert choice.variant == "fp32" and "int8 has no recorded prob_agreement" in choice.reason, choice.reason
    m = manifest("text-classification", int8=rec("int8", ["cpu"], argmax_agreement=1.0, prob_agreement=0.93))
    assert "int8 prob_agreement 0.9300 < budget 0.98" in choose(m, "cpu").reason
