"""actorhub.util.ActorPool behaves as Ray's ray.util.ActorPool."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import actorhub
from actorhub.util import ActorPool

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote
class Worker:
    def __init__(self, tag: int) -> None:
        self.tag = tag

    def double(self, v: int) -> int:
        return 2 * v

    def slow_double(self, v: float) -> float:
        time.sleep(v)
        return 2 * v

    def whoami(self, _: object) -> int:
        return self.tag

    def fail(self, v: int) -> int:
        raise ValueError(f"bad {v}")


@pytest.fixture(scope="module")
def workers() -> list[Any]:
    handles = [Worker.remote(i) for i in range(2)]
    actorhub.get([h.whoami.remote(None) for h in handles])
    return handles


def test_map_keeps_order_and_unordered_yields_all(workers: list[Any]) -> None:
    pool: ActorPool[int] = ActorPool(workers)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [2 * v for v in range(10)]
    # Completion order: the long one (0.6 s) submitted first comes last.
    out = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v), [0.6, 0.0, 0.0, 0.0]))
    assert sorted(out) == [0.0, 0.0, 0.0, 1.2]
    assert out[-1] == 1.2
    assert not pool.has_next()


def test_submit_queues_until_an_actor_is_free(workers: list[Any]) -> None:
    pool: ActorPool[int] = ActorPool(workers)
    for v in range(5):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free()
    results = []
    while pool.has_next():
        results.append(pool.get_next())
    assert results == [0, 2, 4, 6, 8]
    assert pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_timeout_and_ignore(workers: list[Any]) -> None:
    pool: ActorPool[float] = ActorPool(workers[:1])
    pool.submit(lambda a, v: a.slow_double.remote(v), 1.0)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.05)
    assert pool.has_next()  # a plain timeout keeps the result to read later
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()
    pool.submit(lambda a, v: a.slow_double.remote(v), 0.0)
    assert pool.get_next(timeout=30) == 0.0
    pool.submit(lambda a, v: a.slow_double.remote(v), 1.0)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.get_next_unordered() == 2.0


def test_get_next_after_unordered_is_refused(workers: list[Any]) -> None:
    pool: ActorPool[float] = ActorPool(workers)
    pool.submit(lambda a, v: a.slow_double.remote(v), 0.5)
    pool.submit(lambda a, v: a.slow_double.remote(v), 0.0)
    assert pool.get_next_unordered() == 0.0  # the second finished first
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    assert pool.get_next_unordered() == 1.0


def test_errors_surface_and_free_the_actor(workers: list[Any]) -> None:
    pool: ActorPool[int] = ActorPool(workers[:1])
    pool.submit(lambda a, v: a.fail.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    with pytest.raises(ValueError, match="bad 1"):
        pool.get_next()
    assert pool.get_next() == 4


def test_push_and_pop_idle(workers: list[Any]) -> None:
    pool: ActorPool[object] = ActorPool([])
    assert pool.pop_idle() is None
    pool.submit(lambda a, v: a.whoami.remote(v), None)  # no actor yet: queued
    assert not pool.has_next()
    pool.push(workers[1])  # takes the queued submission at once
    assert pool.has_next() and pool.get_next() == 1
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(workers[1])
    popped = pool.pop_idle()
    assert popped == workers[1] and pool.pop_idle() is None


def test_pool_from_many_threads_of_callers(workers: list[Any]) -> None:
    # Each thread its own pool over the same actors: the actors serve them all.
    results: list[list[int]] = []

    def run(base: int) -> None:
        pool: ActorPool[int] = ActorPool(workers)
        results.append(list(pool.map(lambda a, v: a.double.remote(v), range(base, base + 20))))

    threads = [threading.Thread(target=run, args=(100 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r[0] for r in results) == [0, 200, 400, 600]
    assert all(r == [2 * v for v in range(r[0] // 2, r[0] // 2 + 20)] for r in results)
