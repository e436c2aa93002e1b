"""HTTP plumbing shared by the routes: bounded body reads, API-key check, readiness, timeouts, errors."""
from __future__ import annotations

import asyncio
import hmac
from typing import Any, Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from onnxformer.errors import ServingError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(f"request body is {declared} bytes; the limit is {limit}", 413)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise ServingError("compressed request bodies are not accepted; send them uncompressed", 415)
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked uploads carry no content-length: count as we go
        size += len(chunk)
        if size > limit:
            raise ServingError(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, schema: type[M]) -> M:
    """Validate a JSON body against a pydantic schema; any problem is a 400 with the first reason."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise ServingError(f"invalid request ({where}: {err['msg']})", 400) from None


def check_api_key(request: Request, expected: str | None) -> None:
    if expected is None:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ServingError("missing or wrong API key: send 'Authorization: Bearer <key>'", 401)


async def within(seconds: float, work: Awaitable[T]) -> T:
    """Run ``work`` under the per-request timeout (queue wait included)."""
    try:
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError:
        raise ServingError(f"request timed out after {seconds:g}s; retry, or raise --timeout", 504) from None


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """KServe's ``{"error": msg}``; the OpenAI-style routes get OpenAI's error object."""
    body: dict[str, Any] = {"error": message}
    if path.startswith("/v1/"):
        body = {"error": {"message": message, "type": _openai_type(status), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _openai_type(status: int) -> str:
    return {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
