"""Run the app under uvicorn: loopback by default, graceful shutdown on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import uvicorn

from onnxformer.artifact.manifest import Manifest
from onnxformer.artifact.tasks import get_task
from onnxformer.progress import console
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator
from onnxformer.serve.app import create_app
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.statuses import ServingError

log = logging.getLogger("onnxformer.serve")


def uvicorn_config(app: Any, config: ServeConfig, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=max(1, round(config.graceful_s)),  # in-flight requests get this long to finish
        timeout_keep_alive=max(1, round(config.keep_alive_s)), limit_concurrency=config.max_connections,
        lifespan="on",
    )


def check_port(config: ServeConfig) -> None:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    ports = [("port", config.port)] + ([("grpc_port", config.grpc_port)] if config.grpc_port else [])
    for field, port in ports:
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            try:
                s.bind((config.host, port))
            except OSError as e:
                raise ServingError(f"cannot listen on {config.host}:{port} ({e.strerror or e}); "
                                   f"choose another {ServeConfig.flag(field)} or stop what uses it") from None


def serve(directories: str | Path | list[str | Path], config: ServeConfig, variant: str | None = None,
          threads: int | None = None) -> None:
    """Load every model up front (a bad artifact is a one-line CLI error), then serve until signalled."""
    config.check()
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", config.host)
    directories = [directories] if isinstance(directories, (str, Path)) else list(directories)
    names = served_names(config, len(directories))
    models = [(name, load_model(d, config, variant, threads)) for name, d in zip(names, directories)]
    check_port(config)  # before "serving …": a port in use is one line, not a banner then an error
    app = create_app(lambda: models, config)
    grpc = f" and grpc://{config.host}:{config.grpc_port}" if config.grpc_port else ""
    for name, model in models:
        m = model.manifest
        console.print(f"serving {name or m.name} ({m.task}, {model.variant} on {model.provider}) on "
                      f"http://{config.host}:{config.port}{grpc}")
        for passed, why in model.passed_over.items():
            console.print(f"warning: {name or m.name}: variant {passed} passed over ({why}); serving {model.variant} "
                          f"instead ({ServeConfig.flag('strict')} refuses to start)", style="yellow", markup=False,
                          soft_wrap=True)  # one line, whatever the terminal's width: log scrapers see it whole
    uvicorn.Server(uvicorn_config(app, config, log_level="info")).run()  # exits 1 itself if the port is taken


def served_names(config: ServeConfig, count: int) -> list[str | None]:
    """``--served-model-name a,b``: one name per directory, in order (None: the manifest's name)."""
    if config.served_model_name is None:
        return [None] * count
    names = [n.strip() for n in config.served_model_name.split(",")]
    if len(names) != count or not all(names) or len(set(names)) != count:
        raise ServingError(f"{ServeConfig.flag('served_model_name')} needs {count} distinct comma-separated "
                           f"name(s), one per directory (got {config.served_model_name!r})")
    return list(names)


def load_model(directory: str | Path, config: ServeConfig, variant: str | None, threads: int | None) -> Model | Generator:
    kwargs: dict[str, Any] = {k: v for k, v in {"variant": variant, "threads": threads}.items() if v is not None}
    if get_task(Manifest.load(directory).task).generative:  # decoders and seq2seq: /v1/completions
        return Generator.load(directory, batching=config.continuous_batching, **kwargs)
    return Model.load(directory, max_batch_tokens=config.max_batch_tokens, max_batch_size=config.max_batch_size,
                      variant_fallback=not config.strict, **kwargs)
