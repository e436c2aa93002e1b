"""The outermost line of defence, as pure ASGI: a cap on requests in flight per client address, and every
exception that escapes a route turned into a JSON error in the route's shape — a 500 with an id that is also in
the log (and counted in ``onnxformer_internal_errors_total``), or, for a client that hung up, a 499 that nobody
reads (not a 500, no traceback)."""
from __future__ import annotations

import collections
import logging
import uuid
from typing import Any, Callable

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from onnxformer.serve.config import ServeConfig
from onnxformer.serve.httpio import error_response
from onnxformer.serve.metrics import Metrics
from onnxformer.serve.statuses import ErrorKind

log = logging.getLogger("onnxformer.serve")


def internal_response(path: str, error: BaseException, kind: ErrorKind, metrics: Metrics) -> Response:
    """A server-side failure: logged with its traceback under an id the client also gets, and counted."""
    return error_response(path, kind, record_internal(path, error, metrics))


def record_internal(where: str, error: BaseException, metrics: Metrics) -> str:
    """Log ``error`` with its traceback under a fresh id, count it, and return the message a client gets
    (HTTP and gRPC alike): the id, never the error's own text, which may name server paths."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s", error_id, where, exc_info=error)
    metrics.internal_errors.inc()
    return (f"internal error {error_id} ({type(error).__name__}); "
            "quote this id to the operator: the server log has the details")


class GuardMiddleware:
    def __init__(self, app: Any, metrics: Metrics, config: ServeConfig):
        self.app, self.metrics, self.limit = app, metrics, config.max_connections_per_client
        self.in_flight: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        client = (scope.get("client") or ("?", 0))[0]
        if self.in_flight[client] >= self.limit:
            message = (f"{self.in_flight[client]} requests in flight from {client} (limit "
                       f"{self.limit}, {ServeConfig.flag('max_connections_per_client')}); wait for one to finish")
            await error_response(path, ErrorKind.TOO_MANY_REQUESTS, message)(scope, receive, send)
            return
        self.in_flight[client] += 1
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # the client left mid-body: nothing to answer, nothing went wrong here
            if not started:
                await error_response(path, ErrorKind.CLIENT_CLOSED, "client disconnected")(scope, receive, send)
        except Exception as e:
            response = internal_response(path, e, ErrorKind.INTERNAL, self.metrics)
            if not started:  # mid-stream there is no status left to send: the log and the counter keep it
                await response(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]
