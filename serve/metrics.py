"""Prometheus metrics, one registry per app (so several servers in one process never collide)."""
from __future__ import annotations

import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("onnxformer_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("onnxformer_request_duration_seconds", "HTTP request latency",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("onnxformer_batch_size", "items per model call", ["lane"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.model_seconds = Histogram("onnxformer_model_call_duration_seconds", "time inside one model call",
                                       ["lane"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.internal_errors = Counter("onnxformer_internal_errors", "exceptions that escaped a route (a 500)",
                                       registry=self.registry)
        self.queue_depth = Gauge("onnxformer_queue_depth", "items admitted and waiting for the model",
                                 registry=self.registry)
        self.passed_over = Gauge("onnxformer_variant_passed_over", "1 for each variant the runtime chose but could "
                                 "not open (reason), so the model serves another", ["model", "variant", "reason"],
                                 registry=self.registry)

        self.running = Gauge("onnxformer_generation_running", "requests in the decode batch", registry=self.registry)
        self.waiting = Gauge("onnxformer_generation_waiting", "requests waiting for a decode slot",
                             registry=self.registry)
        self.occupancy = Gauge("onnxformer_generation_batch_occupancy", "decode batch rows / --max-slots",
                               registry=self.registry)
        self.first_token = Histogram("onnxformer_time_to_first_token_seconds", "submit to first generated token",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inter_token = Histogram("onnxformer_inter_token_latency_seconds", "between two tokens of a request",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.generated_tokens = Counter("onnxformer_generated_tokens", "tokens generated", registry=self.registry)
        self._batches: list[tuple[Callable[[], float], Callable[[], float], int]] = []  # (running, waiting, slots)

    def track_generation(self, running: Callable[[], float], waiting: Callable[[], float], slots: int) -> None:
        """Add one decode batch to the generation gauges: a server of several generative models reports the
        sum of their requests, and occupancy over all their slots."""
        self._batches.append((running, waiting, slots))
        self.running.set_function(lambda: sum(r() for r, _, _ in self._batches))
        self.waiting.set_function(lambda: sum(w() for _, w, _ in self._batches))
        self.occupancy.set_function(lambda: sum(r() for r, _, _ in self._batches) / sum(s for *_, s in self._batches))

    def track_variant(self, model: str, passed_over: dict[str, str]) -> None:
        """The variants a model's load passed over (the runtime's ``passed_over``: name → why)."""
        for variant, reason in passed_over.items():
            self.passed_over.labels(model=model, variant=variant, reason=reason).set(1)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def observe_batch(self, lane: str, n: int, seconds: float) -> None:
        self.batch_size.labels(lane=lane).observe(n)
        self.model_seconds.labels(lane=lane).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no per-request task like BaseHTTPMiddleware): status and latency of every HTTP request."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), {"code": 500}

        async def record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the template, never the raw path
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)
