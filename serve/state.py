"""What the routes share: the config, the metrics, and the model service once it is loaded and warm."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Union

from fastapi import Request

from onnxformer.errors import ErrorKind, ServingError
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator
from onnxformer.runtime.tasks import tasks_where
from onnxformer.serve.batching import BatchLimits, Scheduler
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.generation import GenerationService
from onnxformer.serve.metrics import Metrics
from onnxformer.serve.raw import zero_feeds
from onnxformer.serve.service import ModelService

Loaded = Union[Model, Generator]  # an encoder artifact or a generative one
Service = Union[ModelService, GenerationService]

log = logging.getLogger("onnxformer.serve")


class ServerState:
    def __init__(self, load: Callable[[], Loaded], config: ServeConfig):
        self.load, self.config = load, config
        self.metrics = Metrics()
        self.service: Service | None = None
        self.scheduler: Scheduler | None = None
        self.draining = False
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.service is not None and not self.draining

    async def start(self) -> None:
        """Create the scheduler on the server's loop, then load and warm the model in the background."""
        c = self.config
        limits = BatchLimits(c.batching, c.max_batch_size, c.max_delay_ms / 1000, c.max_queue)
        self.scheduler = Scheduler(limits, self.metrics.observe_batch)
        self.metrics.track_queue(lambda: self.scheduler.pending if self.scheduler else 0)
        self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        try:
            model = await asyncio.to_thread(self.load)
            await self.scheduler.run_in_worker(lambda: warm_up(model))
        except Exception as e:  # reported by /v2/health/ready and every model route; the server stays live
            log.exception("model failed to load")
            self.load_error = f"{type(e).__name__}: {e}"
            return
        if isinstance(model, Generator):
            self.service = GenerationService(model, self.config, self.scheduler, self.metrics)
        else:
            self.service = ModelService(model, self.config, self.scheduler)

    async def stop(self) -> None:
        """Called after uvicorn has finished in-flight requests: drain what is queued, stop the worker."""
        self.draining = True
        self._loading.cancel()
        if self.scheduler is not None:
            await self.scheduler.close()

    def require_service(self, name: str | None = None) -> Service:
        if self.load_error is not None:
            raise ServingError(f"the model failed to load ({self.load_error}); see the server log",
                               ErrorKind.UNAVAILABLE)
        if self.draining:
            raise ServingError("server is shutting down; retry on another replica", ErrorKind.UNAVAILABLE)
        if self.service is None:
            raise ServingError("model is still loading; retry when /v2/health/ready returns 200", ErrorKind.UNAVAILABLE)
        if name is not None and name != self.service.name:
            raise ServingError(f"unknown model {name!r}; this server serves {self.service.name!r}", ErrorKind.NOT_FOUND)
        return self.service

    def refuse_if_full(self) -> None:
        """429 at once when the queue is already full: checked before a body is read, parsed or tokenized, so
        an overloaded server refuses in microseconds (the admission that counts is still the scheduler's)."""
        if self.scheduler is not None:  # a dry run of the scheduler's own admission: its 429, its message
            self.scheduler.admit(1)
            self.scheduler.release(1)

    def model_service(self, endpoint: str, name: str | None = None) -> ModelService:
        service = self.require_service(name)
        if not isinstance(service, ModelService):
            raise ServingError(f"{endpoint} serves encoder models; {service.name!r} is {service.task}: "
                               "use /v1/completions", ErrorKind.BAD_REQUEST)
        return service

    def generation_service(self, endpoint: str, name: str | None = None) -> GenerationService:
        service = self.require_service(name)
        if not isinstance(service, GenerationService):
            tasks = " or ".join(tasks_where(generative=True))
            raise ServingError(f"{endpoint} needs a {tasks} model; {service.name!r} is {service.task}",
                               ErrorKind.BAD_REQUEST)
        return service


def warm_up(model: Loaded) -> None:
    """One tiny call so the first user request does not pay ONNX Runtime's lazy initialisation: a short text,
    or (no tokenizer: a raw model) zeros of the declared inputs."""
    if isinstance(model, Generator):
        model.generate("warm up", max_new_tokens=2)
    elif model.tokenizer is not None:
        model.run(model.tokenizer.encode(["warm up"]).feeds)
    else:
        model.run(zero_feeds(model.manifest.inputs))


def server_state(request: Request) -> ServerState:
    return request.app.state.serving
