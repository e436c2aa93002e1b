"""KServe v2 routes: health, metadata and infer (BYTES text, or the model's raw tensors)."""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from onnxformer import __version__
from onnxformer.errors import ServingError
from onnxformer.serve.httpio import read_body, within
from onnxformer.serve.kserve import HEADER_LENGTH, InferRequest, encode_response, parse_infer, tensor_metadata, text_input
from onnxformer.serve.generation import GenerationService
from onnxformer.serve.service import ModelService
from onnxformer.serve.state import Service, server_state

TEXT_INPUT = "text"
TEXT_OUTPUTS = {  # what the BYTES text input yields, per task
    "feature-extraction": [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}],
    "text-classification": [{"name": "logits", "datatype": "FP32", "shape": [-1, -1]},
                            {"name": "label", "datatype": "BYTES", "shape": [-1]}],
}
RAW_DTYPES = ("INT64", "INT32")

health = APIRouter()  # open: load balancers and kubelets probe without credentials
router = APIRouter()


@health.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/v2/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    server_state(request).require_service()
    return {"ready": True}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": "onnxformer", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    service = _service(request, name, version)
    if isinstance(service, GenerationService):  # no tensors to offer: generation is a loop, not one graph call
        return {"name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx", "inputs": [],
                "outputs": [], "parameters": {"task": service.task, "variant": service.generator.variant,
                                              "endpoint": "/v1/completions"}}
    m = service.model.manifest
    text = [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}] if service.task in TEXT_OUTPUTS else []
    return {"name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": text + tensor_metadata(m["inputs"]),
            "outputs": TEXT_OUTPUTS.get(service.task, []) + tensor_metadata(m["outputs"]),
            "parameters": {"task": service.task, "variant": service.model.variant}}


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    return {"name": _service(request, name, version).name, "ready": True}


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer(request: Request, name: str, version: str = "1") -> Response:
    state = server_state(request)
    service = state.model_service("KServe infer", name)  # a generation model gets 400: use /v1/completions
    _check_version(name, version)
    req = parse_infer(await read_body(request, state.config.max_body_bytes), request.headers.get(HEADER_LENGTH))
    outputs = await within(state.config.timeout_s, _infer(service, req))
    body, headers = encode_response(service.name, req, outputs)
    return Response(body, headers=headers)


def _service(request: Request, name: str, version: str) -> Service:
    service = server_state(request).require_service(name)
    _check_version(name, version)
    return service


def _check_version(name: str, version: str) -> None:
    if version != "1":
        raise ServingError(f"model {name!r} has only version 1 (got {version!r})", 404)


async def _infer(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    if TEXT_INPUT in req.inputs:
        return await _infer_text(service, req)
    return await service.run_raw(_raw_feeds(service, req))


async def _infer_text(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    if len(req.inputs) != 1:
        raise ServingError(f'send either the "{TEXT_INPUT}" input alone or the raw tensors, not both', 400)
    if service.task not in TEXT_OUTPUTS:
        raise ServingError(f'the "{TEXT_INPUT}" input serves {sorted(TEXT_OUTPUTS)} models; {service.name!r} is '
                           f"{service.task}: use its /v1 endpoint or send raw tensors", 400)
    texts = text_input(req, TEXT_INPUT)
    if service.task == "feature-extraction":
        vectors, _ = await service.embed(texts)
        return {"embedding": vectors}
    logits = await service.logits(texts)
    id2label = service.model.manifest["postprocess"].get("id2label", {})
    labels = [id2label.get(str(i), str(i)).encode() for i in logits.argmax(axis=1)]
    return {"logits": logits, "label": np.array(labels, dtype=np.object_)}


def _raw_feeds(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    """Raw tensors must be the model's inputs exactly: integer, 2-D, one shape, within the limits."""
    expected = service.model.input_names
    if sorted(req.inputs) != sorted(expected):
        raise ServingError(f"inputs {sorted(req.inputs)} do not match the model's: send {expected} "
                           f'(or the "{TEXT_INPUT}" BYTES input)', 400)
    shapes = {tuple(t.shape) for t in req.inputs.values()}
    for t in req.inputs.values():
        if t.datatype not in RAW_DTYPES:
            raise ServingError(f"input {t.name!r} must be INT64 (or INT32), got {t.datatype}", 400)
        if len(t.shape) != 2 or 0 in t.shape:
            raise ServingError(f"input {t.name!r} must be [batch, sequence] with both > 0, got {t.shape}", 400)
    if len(shapes) != 1:
        raise ServingError(f"all inputs must share one shape, got {sorted(shapes)}", 400)
    batch, length = shapes.pop()
    service.check_count(batch)
    if length > service.max_tokens:
        raise ServingError(f"sequence length {length} is over the limit of {service.max_tokens} tokens", 422)
    feeds = {n: t.array.astype(np.int64) for n, t in req.inputs.items()}
    vocab = service.model.manifest["architecture"].get("vocab_size")
    ids = feeds.get("input_ids")
    if ids is not None and vocab and (ids.min() < 0 or ids.max() >= vocab):
        raise ServingError(f"input_ids must lie in [0, {vocab}) for this model's vocabulary", 400)
    return feeds
