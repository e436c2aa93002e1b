"""What the routes share: the config, the metrics, and the model service once it is loaded and warm."""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Callable, Union

from fastapi import Request

from onnxformer.artifact.tasks import tasks_where
from onnxformer.runtime import Model
from onnxformer.runtime.generation import Generator
from onnxformer.serve.batcher import Batcher, BatchLimits, NamedLanes
from onnxformer.serve.config import ServeConfig
from onnxformer.serve.generation import GenerationService
from onnxformer.serve.metrics import Metrics
from onnxformer.serve.raw import zero_feeds
from onnxformer.serve.service import ModelService
from onnxformer.serve.statuses import ErrorKind, ServingError

Loaded = Union[Model, Generator]  # an encoder artifact or a generative one
Loader = Callable[[], Union[Loaded, list[tuple[Union[str, None], Loaded]]]]  # one model, or (name, model) pairs
Service = Union[ModelService, GenerationService]

log = logging.getLogger("onnxformer.serve")


class ServerState:
    """``load`` returns one model, or a list of ``(name, model)`` for a server of several (each under its name;
    None: the manifest's)."""

    def __init__(self, load: Loader, config: ServeConfig):
        self.load, self.config = load, config
        self.metrics = Metrics()
        self.services: dict[str, Service] = {}
        self.scheduler: Batcher | None = None
        self.draining = False
        self.load_error: str | None = None

    @property
    def service(self) -> Service | None:
        """The first model's service (the only one, on a server of one)."""
        return next(iter(self.services.values()), None)

    @property
    def ready(self) -> bool:
        return bool(self.services) and not self.draining

    async def start(self) -> None:
        """Create the scheduler on the server's loop, then load and warm the models in the background."""
        c = self.config
        limits = BatchLimits(c.batching, c.max_batch_size, c.max_delay_ms / 1000, c.max_queue)
        self.scheduler = Batcher(limits, self.metrics.observe_batch)
        self.metrics.track_queue(lambda: self.scheduler.pending if self.scheduler else 0)
        self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        scheduler = self.scheduler
        assert scheduler is not None  # made by start(), before the load begins
        try:
            loaded = await asyncio.to_thread(self.load)
            models = loaded if isinstance(loaded, list) else [(None, loaded)]
            services = {}
            for name, model in models:
                service = self._service(model, name)
                await scheduler.run_in_worker(functools.partial(warm_up, model, getattr(service, "batch", None)))
                if service.name in services:
                    raise ServingError(f"two models are named {service.name!r}; give each its own "
                                       f"{ServeConfig.flag('served_model_name')}")
                services[service.name] = service
                self.metrics.track_variant(service.name, model.passed_over)
        except Exception as e:  # reported by /v2/health/ready and every model route; the server stays live
            log.exception("model failed to load")
            self.load_error = f"{type(e).__name__}: {e}"
            return
        self.services = services  # every model at once: ready means all of them are

    def _service(self, model: Loaded, name: str | None) -> Service:
        # each model gets its own batching lanes: texts of two models never share a batch
        assert self.scheduler is not None
        lanes = NamedLanes(self.scheduler, name or model.manifest.name or model.directory.name)
        if isinstance(model, Generator):
            service: Service = GenerationService(model, self.config, lanes, self.metrics)
        else:
            service = ModelService(model, self.config, lanes)
        if name:
            service.name = name
        return service

    async def stop(self) -> None:
        """Called after uvicorn has finished in-flight requests: drain what is queued, stop the worker."""
        self.draining = True
        self._loading.cancel()
        if self.scheduler is not None:
            await self.scheduler.close()

    def require_ready(self) -> None:
        """503 unless every model is loaded and the server is not shutting down."""
        self._check_ready()

    def precheck(self, endpoint: str, generative: bool) -> None:
        """Before a body is read: 503 when not ready, and (one model) 400 when it does not serve ``endpoint``;
        with several models the request's ``model`` field decides, after parsing."""
        self.require_ready()
        if len(self.services) == 1:
            (self.generation_service if generative else self.model_service)(endpoint)

    def _check_ready(self) -> None:
        if self.load_error is not None:
            raise ServingError(f"the model failed to load ({self.load_error}); see the server log",
                               ErrorKind.UNAVAILABLE)
        if self.draining:
            raise ServingError("server is shutting down; retry on another replica", ErrorKind.UNAVAILABLE)
        if not self.services:
            raise ServingError("model is still loading; retry when /v2/health/ready returns 200", ErrorKind.UNAVAILABLE)

    def require_service(self, name: str | None = None) -> Service:
        self._check_ready()
        if name is None:
            if len(self.services) > 1:
                raise ServingError(f"this server serves several models ({', '.join(self.services)}); name one "
                                   "(the request's \"model\" field)", ErrorKind.BAD_REQUEST)
            return next(iter(self.services.values()))  # ready: at least one
        if name not in self.services:
            serves = ", ".join(repr(n) for n in self.services)
            raise ServingError(f"unknown model {name!r}; this server serves {serves}", ErrorKind.NOT_FOUND)
        return self.services[name]

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


def warm_up(model: Loaded, batch: Any = None) -> None:
    """One tiny call so the first user request does not pay ONNX Runtime's lazy initialisation: a short text,
    or (no tokenizer: a raw model) zeros of the declared inputs. A continuously batched decoder warms up through
    its batch (the graph requests will run; the solo graph may not even be started), unseen by the metrics."""
    if batch is not None:
        hook, batch.on_step = batch.on_step, lambda *_: None
        try:
            batch.submit("warm up", 2)
            batch.run_until_done()
        finally:
            batch.on_step = hook
    elif isinstance(model, Generator):
        model.generate("warm up", max_new_tokens=2)
    elif model.tokenizer is not None:
        model.run(model.tokenizer.encode(["warm up"]).feeds)
    else:
        model.run(zero_feeds(model.manifest.inputs))


def server_state(request: Request) -> ServerState:
    return request.app.state.serving
