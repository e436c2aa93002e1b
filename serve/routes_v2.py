"""KServe v2 routes: health, metadata and infer (BYTES text, or the model's raw tensors)."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Request, Response

from onnxformer import __version__
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.generation import GenerationService
from onnxformer.serve.httpio import read_body, within
from onnxformer.serve.kserve import (
    BYTES,
    HEADER_LENGTH,
    InferRequest,
    encode_response,
    parse_infer,
    tensor_metadata,
    text_input,
)
from onnxformer.serve.raw import raw_feeds
from onnxformer.serve.service import ModelService
from onnxformer.serve.state import ServerState, Service, server_state
from onnxformer.serve.statuses import ErrorKind, ServingError
from onnxformer.serve.task_routes import text_tasks

TEXT_INPUT = "text"  # the BYTES input; what it yields per task is the route table's ``text_outputs`` (task_routes.py)

health = APIRouter()  # open: load balancers and kubelets probe without credentials
router = APIRouter()


@health.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/v2/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    server_state(request).require_ready()
    return {"ready": True}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": "onnxformer", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> list[dict[str, Any]]:
    """Triton's repository extension: every model this server serves, and its state."""
    state = server_state(request)
    state.require_ready()
    return repository_index_doc(state)


def repository_index_doc(state: ServerState) -> list[dict[str, Any]]:
    """The repository index (HTTP and gRPC): every model served, version 1, ready."""
    return [{"name": name, "version": "1", "state": "READY"} for name in state.services]


@router.get("/v2/models/{name}/config")
async def model_config(request: Request, name: str) -> dict[str, Any]:
    return model_config_doc(_service(request, name, "1"), server_state(request).config)


def model_config_doc(service: Service, config: ServeConfig) -> dict[str, Any]:
    """Triton's model configuration (HTTP as JSON, gRPC as ``ModelConfig``): tensors with their data types and
    dims (-1: dynamic), the batching this server applies, and what it was made from."""
    doc = model_metadata_doc(service)
    dims = lambda specs: [{"name": t["name"], "data_type": f"TYPE_{t['datatype'].replace('BYTES', 'STRING')}",
                           "dims": t["shape"]} for t in specs]
    return {"name": service.name, "platform": doc["platform"], "backend": "onnxruntime",
            "max_batch_size": config.max_batch_size, "input": dims(doc["inputs"]), "output": dims(doc["outputs"]),
            "dynamic_batching": {"max_queue_delay_microseconds": int(config.max_delay_ms * 1000)}
            if config.batching else None, "parameters": doc["parameters"]}


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    return model_metadata_doc(_service(request, name, version))


def model_metadata_doc(service: Service) -> dict[str, Any]:
    """The v2 model metadata (HTTP and gRPC): tensors, plus task, variant and provider as parameters."""
    if isinstance(service, GenerationService):  # no tensors to offer: generation is a loop, not one graph call
        return {"name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx", "inputs": [],
                "outputs": [], "parameters": {"task": service.task, **_variant(service.generator),
                                              "endpoint": "/v1/completions", **service.limits()}}
    m, text_outputs = service.model.manifest, service.routes.text_outputs
    text = [{"name": TEXT_INPUT, "datatype": BYTES, "shape": [-1]}] if text_outputs else []
    return {"name": service.name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": text + tensor_metadata(m.inputs),
            "outputs": [o.metadata() for o in text_outputs] + tensor_metadata(m.outputs),
            "parameters": {"task": service.task, **_variant(service.model)}}


def _variant(loaded: Any) -> dict[str, str]:
    """Which variant runs on which provider, and (only when one was) the variant passed over and why: KServe
    parameters are scalars, so ``passed_over`` is one string, "name: why; ..."."""
    passed = "; ".join(f"{name}: {why}" for name, why in loaded.passed_over.items())
    return {"variant": loaded.variant, "provider": loaded.provider, **({"passed_over": passed} if passed else {})}


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
    state.refuse_if_full()  # 429 before reading, parsing or tokenizing anything
    req = parse_infer(await read_body(request, state.config), request.headers.get(HEADER_LENGTH))
    outputs = await within(state.config.timeout_s, _infer(service, req))
    body, headers = encode_response(service.name, req, outputs)
    return Response(body, headers=headers)


def _service(request: Request, name: str, version: str) -> Service:
    service = server_state(request).require_service(name)
    _check_version(name, version)
    return service


def _check_version(name: str, version: str) -> None:
    if version != "1":
        raise ServingError(f"model {name!r} has only version 1 (got {version!r})", ErrorKind.NOT_FOUND)


async def _infer(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    if TEXT_INPUT in req.inputs:
        return await _infer_text(service, req)
    return await service.run_raw(raw_feeds(service, req))


async def _infer_text(service: ModelService, req: InferRequest) -> dict[str, np.ndarray]:
    if len(req.inputs) != 1:
        raise ServingError(f'send either the "{TEXT_INPUT}" input alone or the raw tensors, not both',
                           ErrorKind.BAD_REQUEST)
    handler = _TEXT_HANDLERS.get(service.spec.method) if service.routes.text_outputs else None
    if handler is None:
        served = sorted(text_tasks())
        instead = " or ".join([*service.routes.endpoints, "raw tensors"])
        raise ServingError(f'the "{TEXT_INPUT}" input serves {served} models; {service.name!r} is '
                           f"{service.task}: use {instead}", ErrorKind.BAD_REQUEST)
    return await handler(service, text_input(req, TEXT_INPUT))


async def _embed_text(service: ModelService, texts: list[str]) -> dict[str, np.ndarray]:
    vectors, _ = await service.embed(texts)
    return {"embedding": vectors}


async def _classify_text(service: ModelService, texts: list[str]) -> dict[str, np.ndarray]:
    logits = await service.logits(texts)
    post = service.model.manifest.postprocess
    labels = [post.id2label.get(str(i), str(i)).encode() for i in logits.argmax(axis=1)]
    return {"logits": logits, "label": np.array(labels, dtype=np.object_)}


# what the text input runs, by the task's method (its outputs are the route table's ``text_outputs``)
_TEXT_HANDLERS: dict[str, Callable[[ModelService, list[str]], Awaitable[dict[str, np.ndarray]]]] = {
    "embed": _embed_text, "classify": _classify_text,
}
