"""Dynamic batching: concurrent requests are merged into one model call, run off the event loop.

A ``Lane`` is one kind of work (embed, classify, raw tensors …) with its own queue. Each lane's loop takes
the oldest job and every queued job that fits the batch-size cap (waiting up to ``max_delay`` for more only
while the worker is busy with other work: requests that arrive during a call form the next batch), and runs the
merged call in the scheduler's single worker thread (ONNX Runtime already uses every core inside one call,
so more model threads would only contend). The runtime then sorts the merged texts by length and cuts
them into batches under its token budget, which keeps padding low. The event loop never runs the model.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from onnxformer.runtime.batching import DEFAULT_MAX_BATCH_SIZE
from onnxformer.serve.statuses import ErrorKind, ServingError

log = logging.getLogger("onnxformer.serve")

RunFn = Callable[[list[Any]], Sequence[Any]]  # items → one result per item, in order (runs in the worker)


@dataclass(frozen=True)
class BatchLimits:
    batching: bool = True
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay_s: float = 0.002
    max_queue: int = 1024


@dataclass
class LaneJob:
    items: list[Any]
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Owns the worker thread, the admission count behind 429, and one lane per kind of work."""

    def __init__(self, limits: BatchLimits, on_batch: Callable[[str, int, float], None] = lambda *_: None):
        self.limits = limits
        self.on_batch = on_batch  # metrics hook: (lane, items in the model call, seconds it took)
        self.pending = 0  # items admitted and not yet handed to the model
        self.busy = 0  # calls submitted to the worker and not yet finished
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxformer-model")
        self._lanes: dict[tuple[str, str], Lane] = {}

    def lane(self, name: str, run: RunFn, mergeable: bool = True, owner: str = "") -> Lane:
        """The lane ``name`` of model ``owner`` (two models' texts never share a batch), made on first use."""
        key = (owner, name)
        if key not in self._lanes:
            self._lanes[key] = Lane(self, name, run, mergeable and self.limits.batching)
        return self._lanes[key]

    def admit(self, n: int) -> None:
        if self.pending + n > self.limits.max_queue:
            raise ServingError(
                f"server busy: {self.pending} texts queued (limit {self.limits.max_queue}); retry shortly",
                ErrorKind.TOO_MANY_REQUESTS)
        self.pending += n

    def release(self, n: int) -> None:
        self.pending -= n

    async def run_in_worker(self, fn: Callable[[], Any]) -> Any:
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self.busy -= 1

    async def close(self) -> None:
        """Finish every queued job, then stop the lanes and the worker."""
        for lane in self._lanes.values():
            await lane.drain()
        for lane in self._lanes.values():
            lane.stop()
        self._executor.shutdown(wait=True)


class Lane:
    def __init__(self, scheduler: Batcher, name: str, run: RunFn, mergeable: bool):
        self.scheduler, self.name, self.run, self.mergeable = scheduler, name, run, mergeable
        self._jobs: collections.deque[LaneJob] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"lane-{name}")

    async def submit(self, items: list[Any]) -> list[Any]:
        """Queue ``items`` (already validated) and wait for their results. Raises 429 when the queue is full."""
        self.scheduler.admit(len(items))
        job = LaneJob(list(items))
        self._jobs.append(job)
        self._idle.clear()
        self._wakeup.set()
        return await job.future  # cancelling this (timeout) cancels the job; the loop then skips it

    async def drain(self) -> None:
        await self._idle.wait()

    def stop(self) -> None:
        self._task.cancel()

    async def _loop(self) -> None:
        while True:
            if not self._jobs:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._take()]
            if self.mergeable:
                await self._fill(batch)
            live = [j for j in batch if not j.future.done()]  # drop requests that timed out while queued
            if live:
                await self._execute(live)

    def _take(self) -> LaneJob:
        job = self._jobs.popleft()
        self.scheduler.release(len(job.items))
        return job

    async def _fill(self, batch: list[LaneJob]) -> None:
        """Add queued jobs while they fit the cap. Late arrivals are waited for (up to max_delay) only while
        the worker is busy: an idle model runs what is queued at once, and the requests that arrive during
        that call form the next batch, so a lone request never pays the delay."""
        limits = self.scheduler.limits
        deadline = asyncio.get_running_loop().time() + limits.max_delay_s
        size = len(batch[0].items)
        while size < limits.max_batch_size:
            if not self._jobs and (not self.scheduler.busy or not await self._wait_until(deadline)):
                return
            if size + len(self._jobs[0].items) > limits.max_batch_size:
                return  # stays at the head of the queue for the next call
            size += len(self._jobs[0].items)
            batch.append(self._take())

    async def _wait_until(self, deadline: float) -> bool:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return bool(self._jobs)

    async def _execute(self, batch: list[LaneJob]) -> None:
        items = [item for job in batch for item in job.items]
        try:
            results = await self.scheduler.run_in_worker(lambda: self._run_chunks(items))
        except Exception as e:  # handed to every waiting request; the HTTP layer maps it to a status
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result(results[start:end])
            start = end

    def _run_chunks(self, items: list[Any]) -> list[Any]:
        """One request may hold more items than the batch cap: run it in cap-sized calls."""
        cap = self.scheduler.limits.max_batch_size if self.mergeable else len(items)
        results: list[Any] = []
        for i in range(0, len(items), cap):
            chunk = items[i:i + cap]
            start = time.perf_counter()
            out = list(self.run(chunk))
            self.scheduler.on_batch(self.name, len(chunk), time.perf_counter() - start)
            if len(out) != len(chunk):
                raise RuntimeError(f"lane {self.name}: {len(out)} results for {len(chunk)} items")
            results += out
        return results


class NamedLanes:
    """The shared scheduler as one model sees it: its lanes carry the model's name; everything else (admission,
    the worker thread) is the one scheduler's."""

    def __init__(self, scheduler: Batcher, model: str):
        self._scheduler, self._model = scheduler, model

    def lane(self, name: str, run: Any, mergeable: bool = True) -> Any:
        return self._scheduler.lane(name, run, mergeable, owner=self._model)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._scheduler, attr)


Lanes = Batcher | NamedLanes  # what a model's service batches through
