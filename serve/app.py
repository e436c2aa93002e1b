"""The FastAPI application: routes, API key, error mapping (never a stack trace), metrics, lifecycle."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from onnxformer import __version__
from onnxformer.errors import OnnxformerError
from onnxformer.serve import routes_chat, routes_generate, routes_rerank, routes_v1, routes_v2
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.guard import GuardMiddleware, internal_response
from onnxformer.serve.httpio import check_api_key, error_response
from onnxformer.serve.metrics import MetricsMiddleware
from onnxformer.serve.state import Loader, ServerState, server_state
from onnxformer.serve.statuses import KINDS, ErrorKind, ServingError, error_kind, kind_for_status

log = logging.getLogger("onnxformer.serve")


def create_app(load: Loader, config: ServeConfig | None = None) -> FastAPI:
    """``load`` runs in a thread after the server is up: /v2/health/ready says 503 until it returns."""
    state = ServerState(load, (config or ServeConfig()).check())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        grpc_server = await _start_grpc(state)
        yield
        if grpc_server is not None:
            await grpc_server.stop(state.config.graceful_s)  # in-flight calls finish, new ones are refused
        await state.stop()  # uvicorn has already waited for in-flight requests

    docs = state.config.docs  # off by default: the API surface is not advertised unless asked for
    app = FastAPI(title="onnxformer", version=__version__, lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.serving = state
    guarded = [Depends(_api_key)]
    app.include_router(routes_v2.health)
    app.include_router(routes_v2.router, dependencies=guarded)
    app.include_router(routes_v1.router, dependencies=guarded)
    app.include_router(routes_generate.router, dependencies=guarded)
    app.include_router(routes_rerank.router, dependencies=guarded)
    app.include_router(routes_chat.router, dependencies=guarded)
    app.add_api_route("/metrics", metrics, methods=["GET"], dependencies=guarded)
    _add_error_handlers(app)
    app.add_middleware(GuardMiddleware, metrics=state.metrics, config=state.config)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: it sees the guard's statuses too
    return app


async def _start_grpc(state: ServerState) -> Any:
    if state.config.grpc_port is None:
        return None
    from onnxformer.serve.grpc_v2 import start_grpc  # grpcio loads only when asked for

    return await start_grpc(state, state.config.host, state.config.grpc_port)


def _api_key(request: Request) -> None:
    check_api_key(request, server_state(request).config.api_key)


async def metrics(request: Request) -> Response:
    return Response(server_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error becomes a kind (``onnxformer.serve.statuses.KINDS`` gives its status, headers and bodies)."""

    @app.exception_handler(OnnxformerError)
    async def library_error(request: Request, e: OnnxformerError) -> Response:
        kind = error_kind(e)  # a ServingError's own kind; InputError (the runtime refused the input) → bad_request
        if isinstance(e, ServingError) or KINDS[kind].status < 500:
            return error_response(request.url.path, kind, str(e))
        return _internal(request, e, kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        message = f"invalid request ({where}: {err.get('msg', 'malformed')})"
        return error_response(request.url.path, ErrorKind.BAD_REQUEST, message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:  # 404 route, 405 method
        return error_response(request.url.path, kind_for_status(e.status_code), str(e.detail), dict(e.headers or {}))

    # any other exception reaches GuardMiddleware (serve/guard.py): a JSON 500 with an id, never a plain-text page


def _internal(request: Request, e: Exception, kind: ErrorKind) -> Response:
    return internal_response(request.url.path, e, kind, server_state(request).metrics)
