"""What the routes share: the config, the metrics, and the model service once it is loaded and warm."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Union

from fastapi import Request

from onnxformer.errors import ServingError
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator
from onnxformer.serve.batching import BatchLimits, Scheduler
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.generation import GenerationService
from onnxformer.serve.metrics import Metrics
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
            self.service = GenerationService(model, self.config, self.scheduler)
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
            raise ServingError(f"the model failed to load ({self.load_error}); see the server log", 503)
        if self.draining:
            raise ServingError("server is shutting down; retry on another replica", 503)
        if self.service is None:
            raise ServingError("model is still loading; retry when /v2/health/ready returns 200", 503)
        if name is not None and name != self.service.name:
            raise ServingError(f"unknown model {name!r}; this server serves {self.service.name!r}", 404)
        return self.service

    def model_service(self, endpoint: str, name: str | None = None) -> ModelService:
        service = self.require_service(name)
        if not isinstance(service, ModelService):
            raise ServingError(f"{endpoint} serves encoder models; {service.name!r} is {service.task}: "
                               "use /v1/completions", 400)
        return service

    def generation_service(self, endpoint: str, name: str | None = None) -> GenerationService:
        service = self.require_service(name)
        if not isinstance(service, GenerationService):
            raise ServingError(f"{endpoint} needs a text-generation or text2text-generation model; "
                               f"{service.name!r} is {service.task}", 400)
        return service


def warm_up(model: Loaded) -> None:
    """One tiny call so the first user request does not pay ONNX Runtime's lazy initialisation."""
    if isinstance(model, Generator):
        model.generate("warm up", max_new_tokens=2)
    else:
        model.run(model.tokenizer.encode(["warm up"]).feeds)


def server_state(request: Request) -> ServerState:
    return request.app.state.serving
