"""``onnxformer kserve``: KServe ``InferenceService`` manifests for an artifact — a custom predictor that runs
``onnxformer serve`` (KServe v2 and OpenAI routes; ``/v2/health/ready`` as the readiness probe), and one for
KServe's Triton runtime on a repository written by ``onnxformer triton`` (uploaded to ``--storage-uri``)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from onnxformer.serve.statuses import ServingError

API_VERSION = "serving.kserve.io/v1beta1"
PORT = 8080  # KServe's default container port


def inference_services(name: str, image: str, model_dir: str, storage_uri: str | None = None,
                       cpus: str = "2", memory: str = "2Gi") -> list[dict[str, Any]]:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise ServingError(f"--name {name!r}: a Kubernetes name is lower-case letters, digits and '-'")
    resources = {"requests": {"cpu": cpus, "memory": memory}, "limits": {"cpu": cpus, "memory": memory}}
    probe = {"httpGet": {"path": "/v2/health/ready", "port": PORT}, "periodSeconds": 5}
    custom = {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": {"name": name},
              "spec": {"predictor": {"containers": [{
                  "name": "kserve-container", "image": image,
                  "command": ["onnxformer", "serve", model_dir, "--host", "0.0.0.0", "--port", str(PORT),
                              "--served-model-name", name],
                  "ports": [{"containerPort": PORT, "protocol": "TCP"}],
                  "readinessProbe": probe, "resources": resources}]}}}
    docs = [custom]
    if storage_uri:
        docs.append({"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": {"name": f"{name}-triton"},
                     "spec": {"predictor": {"model": {"name": "kserve-container", "modelFormat": {"name": "triton"},
                                                      "storageUri": storage_uri,
                                                      "resources": resources}}}})
    return docs


def add_kserve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kserve", help="write KServe InferenceService manifests (onnxformer serve as a custom "
                                      "predictor; Triton's runtime on an uploaded `onnxformer triton` repository)")
    p.add_argument("--name", required=True, help="the InferenceService's name (and the served model name)")
    p.add_argument("--image", required=True, help="a container image with onnxformer[cpu,serve] and the artifact")
    p.add_argument("--model-dir", default="/models/model", help="the artifact's path inside the image")
    p.add_argument("--storage-uri", help="also a Triton InferenceService on this repository (s3://, gs://, pvc://)")
    p.add_argument("--cpus", default="2")
    p.add_argument("--memory", default="2Gi")
    p.add_argument("--out", required=True, help="the YAML file to write (several documents)")
    p.set_defaults(func=run_kserve)


def run_kserve(args: argparse.Namespace) -> int:
    import yaml

    from onnxformer.artifact.files import atomic_write_bytes
    from onnxformer.progress import console

    docs = inference_services(args.name, args.image, args.model_dir, args.storage_uri, args.cpus, args.memory)
    atomic_write_bytes(Path(args.out), yaml.safe_dump_all(docs, sort_keys=False).encode())
    console.print(f"wrote {args.out} ({len(docs)} InferenceService(s)): kubectl apply -f {args.out}")
    return 0
