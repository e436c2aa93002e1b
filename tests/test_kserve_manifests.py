"""`onnxformer kserve`: the InferenceService manifests equal what the kserve SDK's own models serialize to (the
objects built with its typed models, as KServe's docs build them: a misspelt or misplaced field would differ).

The SDK runs in a subprocess: its KServe v2 gRPC protos and tritonclient's declare the same symbols in protobuf's
one descriptor pool, so the two cannot be imported into one interpreter (the suite imports tritonclient.grpc)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from onnxformer.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("kserve") is None,
                                reason="the kserve SDK is not installed (the dev extra)")


def test_inference_services(tmp_path):
    out = tmp_path / "isvc.yaml"
    assert main(["kserve", "--name", "minilm", "--image", "registry.example/onnxformer:1", "--model-dir",
                 "/models/minilm", "--storage-uri", "s3://bucket/models", "--out", str(out)]) == 0
    check = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stdout + check.stderr[-3000:]
    assert main(["kserve", "--name", "Bad_Name", "--image", "i", "--out", str(out)]) == 1


def compare_with_the_sdk(path: Path) -> None:
    import kserve
    import yaml
    from kubernetes import client as k8s

    custom, triton = yaml.safe_load_all(path.read_text())
    resources = k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "2Gi"}, limits={"cpu": "2", "memory": "2Gi"})
    container = k8s.V1Container(
        name="kserve-container", image="registry.example/onnxformer:1",
        command=["onnxformer", "serve", "/models/minilm", "--host", "0.0.0.0", "--port", "8080",
                 "--served-model-name", "minilm"],
        ports=[k8s.V1ContainerPort(container_port=8080, protocol="TCP")],
        readiness_probe=k8s.V1Probe(http_get=k8s.V1HTTPGetAction(path="/v2/health/ready", port=8080), period_seconds=5),
        resources=resources)
    expected_custom = kserve.V1beta1InferenceService(
        api_version=kserve.constants.KSERVE_V1BETA1, kind=kserve.constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=k8s.V1ObjectMeta(name="minilm"),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=kserve.V1beta1PredictorSpec(containers=[container])))
    expected_triton = kserve.V1beta1InferenceService(
        api_version=kserve.constants.KSERVE_V1BETA1, kind=kserve.constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=k8s.V1ObjectMeta(name="minilm-triton"),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=kserve.V1beta1PredictorSpec(
            model=kserve.V1beta1ModelSpec(name="kserve-container",
                                          model_format=kserve.V1beta1ModelFormat(name="triton"),
                                          storage_uri="s3://bucket/models", resources=resources))))
    serialize = kserve.ApiClient().sanitize_for_serialization
    assert custom == serialize(expected_custom)
    assert triton == serialize(expected_triton)
    print("ok")


if __name__ == "__main__":
    compare_with_the_sdk(Path(sys.argv[1]))
