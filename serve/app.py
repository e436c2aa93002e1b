"""The FastAPI application: routes, API key, error mapping (never a stack trace), metrics, lifecycle."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from onnxformer.errors import InputError, ServingError
from onnxformer.serve import routes_generate, routes_v1, routes_v2
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.httpio import check_api_key, error_response
from onnxformer.serve.metrics import MetricsMiddleware
from onnxformer.serve.state import Loaded, ServerState, server_state

log = logging.getLogger("onnxformer.serve")


def create_app(load: Callable[[], Loaded], config: ServeConfig | None = None) -> FastAPI:
    """``load`` runs in a thread after the server is up: /v2/health/ready says 503 until it returns."""
    state = ServerState(load, (config or ServeConfig()).check())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()  # uvicorn has already waited for in-flight requests

    app = FastAPI(title="onnxformer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = state
    guarded = [Depends(_api_key)]
    app.include_router(routes_v2.health)
    app.include_router(routes_v2.router, dependencies=guarded)
    app.include_router(routes_v1.router, dependencies=guarded)
    app.include_router(routes_generate.router, dependencies=guarded)
    app.add_api_route("/metrics", metrics, methods=["GET"], dependencies=guarded)
    _add_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def _api_key(request: Request) -> None:
    check_api_key(request, server_state(request).config.api_key)


async def metrics(request: Request) -> Response:
    return Response(server_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, e: ServingError) -> Response:
        headers = {"Retry-After": "1"} if e.status in (429, 503) else None
        if e.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(request.url.path, e.status, str(e), headers)

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> Response:  # the runtime refused the input
        return error_response(request.url.path, 400, str(e))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        return error_response(request.url.path, 400, f"invalid request: {e.errors()[0].get('msg', 'malformed')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:  # 404 route, 405 method
        return error_response(request.url.path, e.status_code, str(e.detail), e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)  # the trace stays in the server log
        return error_response(request.url.path, 500, f"internal error ({type(e).__name__}); see the server log")
