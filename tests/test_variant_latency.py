"""variant="auto" by measurement: latencies recorded with the CPU they were measured on, the fastest variant within
the budget for the CPU it runs on, and a short cached measurement at load on a CPU of another kind (issue 15, 2)."""
from __future__ import annotations

import json
import shutil

import pytest

from onnxformer.artifact.cpu import CpuInfo, read_cpuinfo, this_cpu
from onnxformer.artifact.manifest import Latency, Manifest, load_manifest
from onnxformer.errors import ArtifactError
from onnxformer.runtime import Model, latency
from onnxformer.runtime.choice import choose

ZEN2 = CpuInfo("AMD EPYC 7B12", ("avx2",))
SAPPHIRE = CpuInfo("Intel(R) Xeon(R) Platinum 8481C", ("amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f"))


def _manifest(timings: dict[str, dict[CpuInfo, float]]) -> Manifest:
    def rec(precision: str, cos: float, name: str) -> dict:
        lat = [Latency(cpu, ms).to_json() for cpu, ms in timings.get(name, {}).items()]
        return {"file": f"{name}/model.onnx", "sha256": name[0] * 64, "files": {}, "precision": precision,
                "providers": ["cpu"], "made_by": {}, "fidelity": {"min_cosine": cos}, "latency": lat}

    raw = {"format": "onnxformer-artifact", "schema_version": 1, "task": "feature-extraction",
           "architecture": {"model_type": "bert"}, "inputs": [], "outputs": [],
           "variants": {"fp32": rec("fp32", 1.0, "fp32"), "fp32-opt": rec("fp32", 0.99999, "fp32-opt"),
                        "int8": rec("int8", 0.998, "int8")}}
    return Manifest.from_json(raw)


def test_cpu_key_is_model_and_kernel_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nmodel name : AMD EPYC 7B12\nflags : fpu sse avx avx2 fma\n")
    assert read_cpuinfo(info) == ZEN2 and not ZEN2.vnni and SAPPHIRE.vnni
    assert ZEN2.key != CpuInfo("AMD EPYC 7B12", ("avx2", "avx512_vnni")).key


def test_fastest_recorded_on_this_cpu_wins_even_over_int8():
    m = _manifest({"fp32": {ZEN2: 60.0, SAPPHIRE: 20.0}, "fp32-opt": {ZEN2: 30.0, SAPPHIRE: 15.0},
                   "int8": {ZEN2: 30.5, SAPPHIRE: 6.0}})
    on_zen2 = choose(m, "cpu", cpu=ZEN2)
    assert on_zen2.variant == "fp32-opt" and on_zen2.measured  # int8 is no faster there: not chosen by a fixed order
    assert "recorded at quantize on AMD EPYC 7B12 [avx2]" in on_zen2.reason
    assert "fp32-opt 30.00 ms, int8 30.50 ms, fp32 60.00 ms" in on_zen2.reason
    assert choose(m, "cpu", cpu=SAPPHIRE).variant == "int8"
    assert choose(m, "cpu", budget=0.999, cpu=SAPPHIRE).variant == "fp32-opt"  # int8 misses the budget


def test_other_cpu_falls_back_to_the_order_and_says_so_unless_measured():
    m = _manifest({"fp32": {ZEN2: 60.0}, "fp32-opt": {ZEN2: 30.0}, "int8": {ZEN2: 30.5}})
    other = choose(m, "cpu", cpu=SAPPHIRE)
    assert other.variant == "int8" and not other.measured and "not measured on this CPU" in other.reason
    measured = choose(m, "cpu", cpu=SAPPHIRE, measured={"fp32": 9.0, "fp32-opt": 4.0, "int8": 5.0})
    assert measured.variant == "fp32-opt" and "measured at load" in measured.reason
    partial = _manifest({"fp32-opt": {ZEN2: 30.0}, "int8": {ZEN2: 31.0}})  # fp32 unmeasured: no choice by time
    assert not choose(partial, "cpu", cpu=ZEN2).measured


def test_latency_round_trips_and_malformed_is_refused():
    m = _manifest({"int8": {SAPPHIRE: 6.0}})
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert again.variants["int8"].latency == [Latency(SAPPHIRE, 6.0)]
    raw = m.to_json()
    raw["variants"]["int8"]["latency"] = [{"cpu": {"model": "x", "flags": []}, "ms": -1}]
    with pytest.raises(ArtifactError, match=r"variants\.int8\.latency\[0\]\.ms"):
        Manifest.from_json(raw)


@pytest.fixture(scope="module")
def quantized(tiny_artifact, tmp_path_factory):
    from onnxformer.quantize.pipeline import quantize_artifact

    art = tmp_path_factory.mktemp("latency") / "artifact"
    shutil.copytree(tiny_artifact("bert", "feature-extraction"), art)
    quantize_artifact(art, "int8", budget=0.01, smooth=False)  # fuses fp32-opt on the way
    return art


def test_quantize_records_every_cpu_variant_with_this_cpu(quantized):
    m = load_manifest(quantized)
    for name in ("fp32", "fp32-opt", "int8"):
        measured = m.variants[name].latency_on(this_cpu())
        assert measured is not None and measured.ms > 0 and measured.tokens == 128
    model = Model.load(quantized, provider="cpu", measure=False)
    assert "recorded at quantize on " + this_cpu().key in model.reason
    fastest = min(("fp32", "fp32-opt", "int8"), key=lambda n: m.variants[n].latency_on(this_cpu()).ms)
    assert model.variant == fastest


def test_other_cpu_measures_at_load_once_then_uses_the_cache(quantized, tmp_path, monkeypatch):
    art = tmp_path / "artifact"
    shutil.copytree(quantized, art)
    m = load_manifest(art)
    for record in m.variants.values():  # as if quantized on another kind of CPU
        record.latency = [Latency(ZEN2 if this_cpu() != ZEN2 else SAPPHIRE, 1.0)]
    m.save(art)
    monkeypatch.setenv("ONNXFORMER_CACHE", str(tmp_path / "cache"))
    off = Model.load(art, provider="cpu", measure=False)
    assert "not measured on this CPU" in off.reason and not list(tmp_path.glob("cache/latency/*.json"))
    measured = Model.load(art, provider="cpu")
    assert "measured at load (cached per artifact and CPU) on " + this_cpu().key in measured.reason
    cache = tmp_path / "cache" / "latency" / f"{latency.artifact_key(m)}.json"
    times = next(iter(json.loads(cache.read_text()).values()))
    assert set(times) == {"fp32", "fp32-opt", "int8"} and measured.variant == min(times, key=times.get)

    def no_timing(*_, **__):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(latency, "interleaved_ms", no_timing)
    assert Model.load(art, provider="cpu").variant == measured.variant
