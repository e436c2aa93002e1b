"""Run the real server (uvicorn) on a free loopback port in a background thread: for tests and benchmarks."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(load: Callable[[], Any], wait_ready: bool = True, **options: Any) -> Iterator[str]:
    """Yields the base URL; stops the server (gracefully) on exit."""
    import uvicorn

    from onnxformer.serve.app import create_app
    from onnxformer.serve.config import ServeConfig
    from onnxformer.serve.server import uvicorn_config

    config = ServeConfig(port=free_port(), **options)
    server = uvicorn.Server(uvicorn_config(create_app(load, config), config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        _wait(lambda: server.started, "server did not start")
        if wait_ready:
            _wait(lambda: httpx.get(f"{url}/v2/health/ready", headers=_auth(options)).status_code == 200,
                  "model never became ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _auth(options: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {options['api_key']}"} if options.get("api_key") else {}


def _wait(check: Callable[[], bool], message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(message)


class Gate:
    """Wraps a model method so a test can hold the worker thread busy, deterministically."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30), "gate never released"
        return self.fn(*args, **kwargs)
