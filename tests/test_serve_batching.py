"""The dynamic batcher on its own: merging, the batch-size cap, result routing, errors, 429."""
from __future__ import annotations

import asyncio

import pytest

from onnxformer.serve.batcher import Batcher, BatchLimits
from onnxformer.serve.statuses import ServingError


def _run(limits: BatchLimits, jobs: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """Submit every job at once; returns (per-job results, the model calls that happened)."""
    calls: list[list[str]] = []

    async def main() -> list[list[str]]:
        scheduler = Batcher(limits)
        lane = scheduler.lane("echo", lambda chunk: (calls.append(list(chunk)), [s.upper() for s in chunk])[1])
        results = await asyncio.gather(*(lane.submit(items) for items in jobs))
        await scheduler.close()
        return results

    return asyncio.run(main()), calls


def test_concurrent_jobs_merge_and_results_return_to_their_owner():
    jobs = [[f"a{i}", f"b{i}"] for i in range(6)]
    results, calls = _run(BatchLimits(max_batch_size=8, max_delay_s=0.05), jobs)
    assert results == [[f"A{i}", f"B{i}"] for i in range(6)]
    assert [len(c) for c in calls] == [8, 4]  # jobs are never split across calls, and the cap holds


def test_batching_off_runs_each_request_alone():
    jobs = [[f"t{i}"] for i in range(5)]
    _, calls = _run(BatchLimits(batching=False, max_delay_s=0.05), jobs)
    assert calls == [[f"t{i}"] for i in range(5)]


def test_a_request_larger_than_the_cap_runs_in_chunks():
    results, calls = _run(BatchLimits(max_batch_size=2), [["a", "b", "c", "d", "e"]])
    assert results == [["A", "B", "C", "D", "E"]] and [len(c) for c in calls] == [2, 2, 1]


def test_queue_full_is_429():
    async def main() -> None:
        scheduler = Batcher(BatchLimits(max_queue=3))
        scheduler.admit(3)
        with pytest.raises(ServingError) as e:
            scheduler.admit(1)
        assert e.value.status == 429

    asyncio.run(main())


def test_model_error_reaches_every_request_in_the_batch():
    async def main() -> list:
        scheduler = Batcher(BatchLimits(max_delay_s=0.05))
        lane = scheduler.lane("boom", lambda chunk: 1 / 0)
        out = await asyncio.gather(lane.submit(["a"]), lane.submit(["b"]), return_exceptions=True)
        await scheduler.close()
        return out

    assert all(isinstance(e, ZeroDivisionError) for e in asyncio.run(main()))


def test_a_lone_request_does_not_wait_for_company():
    async def main() -> float:
        scheduler = Batcher(BatchLimits(max_delay_s=5.0))
        lane = scheduler.lane("echo", lambda chunk: chunk)
        start = asyncio.get_running_loop().time()
        assert await lane.submit(["alone"]) == ["alone"]
        elapsed = asyncio.get_running_loop().time() - start
        await scheduler.close()
        return elapsed

    assert asyncio.run(main()) < 1.0  # the 5 s delay applies only while the worker is busy


def test_while_the_worker_is_busy_late_arrivals_join_the_batch():
    import threading

    calls: list[list[str]] = []
    release = threading.Event()

    async def main() -> None:
        scheduler = Batcher(BatchLimits(max_delay_s=0.5))
        lane = scheduler.lane("echo", lambda chunk: (calls.append(list(chunk)), chunk)[1])
        other = asyncio.ensure_future(scheduler.run_in_worker(lambda: release.wait(10)))  # another lane's call
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(lane.submit(["a"]))
        await asyncio.sleep(0.1)  # arrives within the delay, while the worker is still busy
        second = asyncio.ensure_future(lane.submit(["b"]))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, second, other)
        await scheduler.close()

    asyncio.run(main())
    assert calls == [["a", "b"]]
