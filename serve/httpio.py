"""HTTP plumbing shared by the routes: bounded body reads, API-key check, readiness, timeouts, errors."""
from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any, Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse

from onnxformer.serve.config import ServeConfig
from onnxformer.serve.statuses import KINDS, ErrorKind, ServingError

T = TypeVar("T")


async def read_body(request: Request, config: ServeConfig) -> bytes:
    """The whole body, refusing (413) anything over ``--max-body-bytes`` before reading it all, and (408) a
    body that does not arrive within ``--body-timeout`` (a client that declares a length and stops sending)."""
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(f"request body is {declared} bytes; the limit is {limit}", ErrorKind.PAYLOAD_TOO_LARGE)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise ServingError("compressed request bodies are not accepted; send them uncompressed",
                           ErrorKind.UNSUPPORTED_MEDIA_TYPE)
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + config.body_timeout_s
    while True:  # chunked uploads carry no content-length: count as we go
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(deadline - time.monotonic(), 0.001))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise ServingError(f"request body did not arrive within {config.body_timeout_s:g}s "
                               f"({ServeConfig.flag('body_timeout_s')})", ErrorKind.REQUEST_TIMEOUT) from None
        size += len(chunk)
        if size > limit:
            raise ServingError(f"request body exceeds the limit of {limit} bytes", ErrorKind.PAYLOAD_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def check_api_key(request: Request, expected: str | None) -> None:
    if expected is None:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ServingError("missing or wrong API key: send 'Authorization: Bearer <key>'", ErrorKind.UNAUTHORIZED)


async def within(seconds: float, work: Awaitable[T]) -> T:
    """Run ``work`` under the per-request timeout (queue wait included)."""
    try:
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError:
        raise ServingError(f"request timed out after {seconds:g}s; retry, or raise --timeout",
                           ErrorKind.TIMEOUT) from None


def error_response(path: str, kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one rendering of an error: status and headers from the kind's row in ``KINDS``; KServe's
    ``{"error": msg}``, or OpenAI's error object on the OpenAI-style ``/v1/`` routes."""
    body = openai_error(kind, message) if path.startswith("/v1/") else {"error": message}
    return JSONResponse(body, status_code=KINDS[kind].status, headers={**dict(KINDS[kind].headers), **(headers or {})})


def openai_error(kind: ErrorKind, message: str) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "code"}}`` (also the error event of a completion stream)."""
    info = KINDS[kind]
    return {"error": {"message": message, "type": info.openai_type, "code": info.status}}
