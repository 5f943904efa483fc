"""actorhub.util.queue.Queue: an actor-backed FIFO, as Ray's ray.util.queue.Queue."""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import time
from typing import Any

import pytest

import actorhub
from actorhub.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.usefixtures("shared_cluster")


def test_put_get_sizes_and_nowait() -> None:
    q = Queue(maxsize=2)
    try:
        assert q.empty() and not q.full() and q.size() == 0 and len(q) == 0
        q.put(1)
        q.put_nowait(2)
        assert q.full() and q.qsize() == 2
        with pytest.raises(Full):
            q.put_nowait(3)
        with pytest.raises(Full):
            q.put(3, block=False)
        assert q.get() == 1 and q.get_nowait() == 2
        with pytest.raises(Empty):
            q.get_nowait()
        with pytest.raises(stdlib_queue.Empty):  # Ray's Empty is the standard library's
            q.get(block=False)
    finally:
        q.shutdown()


def test_timeouts_and_bad_arguments() -> None:
    q = Queue(maxsize=1)
    try:
        start = time.monotonic()
        with pytest.raises(Empty):
            q.get(timeout=0.2)
        assert time.monotonic() - start >= 0.2
        q.put("x")
        with pytest.raises(Full):
            q.put("y", timeout=0.1)
        with pytest.raises(ValueError, match="non-negative"):
            q.get(timeout=-1)
        with pytest.raises(TypeError, match="list"):
            q.put_nowait_batch(("a",))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="int"):
            q.get_nowait_batch("2")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="nonnegative"):
            q.get_nowait_batch(-1)
    finally:
        q.shutdown(force=True)


def test_batches_are_all_or_nothing() -> None:
    q = Queue(maxsize=3)
    try:
        q.put_nowait_batch([1, 2])
        with pytest.raises(Full, match="Cannot add 2 items"):
            q.put_nowait_batch([3, 4])
        assert q.size() == 2
        with pytest.raises(Empty, match="Cannot get 3 items"):
            q.get_nowait_batch(3)
        assert q.get_nowait_batch(2) == [1, 2]
    finally:
        q.shutdown()


@actorhub.remote
def produce(q: Queue, items: list[int]) -> int:
    for item in items:
        q.put(item)
    return len(items)


@actorhub.remote
class Consumer:
    def take(self, q: Queue, n: int) -> list[Any]:
        return [q.get(timeout=30) for _ in range(n)]


def test_shared_by_tasks_and_actors_with_waiting_getters() -> None:
    q = Queue()
    try:
        consumers = [Consumer.remote() for _ in range(3)]
        # The getters wait in the queue's actor before anything is put.
        takes = [c.take.remote(q, 10) for c in consumers]
        produced = [produce.remote(q, list(range(i * 10, i * 10 + 10))) for i in range(3)]
        assert actorhub.get(produced) == [10, 10, 10]
        taken = actorhub.get(takes)
        assert sorted(x for part in taken for x in part) == list(range(30))
        assert q.empty()
    finally:
        q.shutdown()


def test_async_put_and_get() -> None:
    q = Queue(maxsize=1)

    async def main() -> list[Any]:
        await q.put_async("a")
        with pytest.raises(Full):
            await q.put_async("b", timeout=0.05)
        first = await q.get_async()
        getter = asyncio.ensure_future(q.get_async(timeout=30))
        await q.put_async("c")
        with pytest.raises(Empty):
            await q.get_async(block=False)
        return [first, await getter]

    try:
        assert asyncio.run(main()) == ["a", "c"]
    finally:
        q.shutdown()


def test_actor_options_and_shutdown() -> None:
    q = Queue(actor_options={"name": "shared-queue", "namespace": "queues"})
    same = actorhub.get_actor("shared-queue", namespace="queues")
    actorhub.get(same.put.remote("via-handle"))
    assert q.get() == "via-handle"
    q.shutdown()
    assert q.actor is None
    q.shutdown()  # twice is fine
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            actorhub.get_actor("shared-queue", namespace="queues")
        except ValueError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the queue's actor outlived shutdown()")
