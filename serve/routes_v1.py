"""Convenience routes: OpenAI-shaped embeddings and one JSON endpoint per task."""
from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse  # plain json.dumps: FastAPI's jsonable_encoder walks every float
from pydantic import BaseModel

from onnxformer.runtime.pooling import truncate_dims
from onnxformer.serve.httpio import read_body, within
from onnxformer.serve.schemas import (
    AnswerRequest,
    ClassifyRequest,
    EmbeddingsRequest,
    TagRequest,
    Texts,
    as_list,
    parse_body,
)
from onnxformer.serve.state import ServerState, server_state
from onnxformer.serve.statuses import ErrorKind, ServingError

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> JSONResponse:
    state, req = await parse_request(request, EmbeddingsRequest)
    service = state.model_service("/v1/embeddings", req.model)
    inputs = as_list(req.input)
    post = service.model.manifest.postprocess
    if inputs and not isinstance(inputs[0], str):  # token ids (OpenAIEmbeddings sends tiktoken's): the model's own
        if req.prompt_name is not None or req.prompt is not None:
            raise ServingError("prompt_name and prompt prefix text; with token-id input, put the prompt's tokens "
                               "in the ids yourself", ErrorKind.BAD_REQUEST)
        work = service.embed_ids(inputs)
    else:
        prefix = post.prompt(req.prompt_name, req.prompt)  # the checkpoint's default prompt unless told otherwise
        work = service.embed([prefix + t for t in inputs])
    vectors, tokens = await within(state.config.timeout_s, work)
    vectors = truncate_dims(vectors, req.dimensions or post.truncate_dim, service.model.normalizes())  # Matryoshka
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": service.name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


@router.get("/v1/models")
async def models(request: Request) -> JSONResponse:
    """OpenAI's model list: every model this server serves."""
    state = server_state(request)
    state.require_ready()
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                     "owned_by": "onnxformer", "task": service.task}
                                                    for name, service in state.services.items()]})


@router.post("/v1/classify")
async def classify(request: Request) -> JSONResponse:
    state, req = await parse_request(request, ClassifyRequest)
    service = state.model_service("/v1/classify", req.model)
    return _results(service, await within(state.config.timeout_s, service.classify(_texts(req.inputs), req.top_k)))


@router.post("/v1/tag")
async def tag(request: Request) -> JSONResponse:
    state, req = await parse_request(request, TagRequest)
    service = state.model_service("/v1/tag", req.model)
    return _results(service, await within(state.config.timeout_s, service.tag(_texts(req.inputs), req.aggregation)))


@router.post("/v1/answer")
async def answer(request: Request) -> JSONResponse:
    state, req = await parse_request(request, AnswerRequest)
    service = state.model_service("/v1/answer", req.model)
    pairs = [(p.question, p.context) for p in req.inputs]
    if not pairs:
        raise ServingError('"inputs" is empty; send at least one {"question", "context"} pair', ErrorKind.BAD_REQUEST)
    return _results(service, await within(state.config.timeout_s, service.answer(pairs)))


def _results(service: Any, results: Any) -> JSONResponse:
    return JSONResponse({"model": service.name, "results": results})


async def parse_request(request: Request, schema: type[BaseModel]) -> tuple[ServerState, Any]:
    state = server_state(request)
    state.require_ready()  # 503 before reading a body we could not serve
    state.refuse_if_full()  # 429 before reading, parsing or tokenizing anything
    return state, parse_body(await read_body(request, state.config), schema)


def _texts(inputs: Texts) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def _encode(vector: Any, fmt: str) -> Any:
    if fmt == "base64":  # OpenAI's compact form: little-endian float32 bytes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
