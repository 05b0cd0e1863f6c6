"""The service's worker thread (cloud_service.worker): answers, errors, many callers at once,
callers that give up, and the scheduling policy that keeps it from preempting the event loop."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from cloud_service.worker import WorkerThread, yield_on_wakeup


@pytest.fixture
def worker():
    thread = WorkerThread("test-worker")
    yield thread
    thread.stop()


async def test_answers_and_errors_come_back_to_their_caller(worker: WorkerThread) -> None:
    assert await worker.call(lambda: 6 * 7) == 42

    def fails() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await worker.call(fails)
    assert await worker.call(lambda: "still serving") == "still serving"


async def test_many_callers_each_get_their_own_answer_in_order_of_work(worker: WorkerThread) -> None:
    done: list[int] = []

    def work(i: int) -> int:
        done.append(i)
        return i * i

    answers = await asyncio.gather(*(worker.call(lambda i=i: work(i)) for i in range(500)))
    assert answers == [i * i for i in range(500)]
    assert done == list(range(500))  # one thread, in the order handed over


async def test_a_caller_that_gives_up_does_not_stop_the_worker(worker: WorkerThread) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "late"

    task = asyncio.ensure_future(worker.call(slow))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await worker.call(lambda: "next") == "next"


async def test_answers_reach_each_callers_own_loop(worker: WorkerThread) -> None:
    """Two event loops (the service's and, say, a test's in another thread) share one worker."""
    def other_loop() -> str:
        return asyncio.run(worker.call(lambda: threading.current_thread().name))

    assert await asyncio.to_thread(other_loop) == "test-worker"
    assert await worker.call(lambda: threading.current_thread().name) == "test-worker"


def test_stop_finishes_the_work_queued_first() -> None:
    thread = WorkerThread("test-stop")
    seen: list[int] = []

    async def queue_three() -> None:
        await asyncio.gather(*(thread.call(lambda i=i: seen.append(i)) for i in range(3)))

    asyncio.run(queue_three())
    thread.stop()
    assert seen == [0, 1, 2]
    assert not thread._thread.is_alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is a Linux scheduling policy")
async def test_the_worker_runs_as_a_batch_thread_and_the_loop_does_not(worker: WorkerThread) -> None:
    assert await worker.call(lambda: os.sched_getscheduler(0)) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left alone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is a Linux scheduling policy")
def test_yield_on_wakeup_changes_only_the_calling_thread() -> None:
    policies: dict[str, int] = {}

    def run() -> None:
        policies["ok"] = int(yield_on_wakeup())
        policies["thread"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert policies == {"ok": 1, "thread": os.SCHED_BATCH}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
