"""Ray's task and object microbenchmarks (`ray_perf.py`), run on actorhub.

Same names and workloads as Ray's; `timeit` and `Result` come from _microbenchmark.
The functions live here, at module level, so workers import them by reference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import actorhub
from actorhub.api.actor_class import ActorClass
from actorhub.cli.bench_timing import BATCH, Result, Timing, timeit
from actorhub.tasks.remote_function import RemoteFunction

MULTI_CLIENTS = 4
LARGE_ITEMS = 12_500_000  # int64 -> 100 MB
REFS_IN_OBJECT = 10_000


def small_value() -> bytes:
    return b"ok"


def refs_object() -> list[Any]:
    return [actorhub.put(i) for i in range(REFS_IN_OBJECT)]


class TaskClient:
    def batch(self, n: int) -> None:
        actorhub.get([remote_small_value.remote() for _ in range(n)])


remote_small_value: RemoteFunction[[], bytes] = actorhub.remote(small_value)
remote_refs_object: RemoteFunction[[], list[Any]] = actorhub.remote(refs_object)
RemoteTaskClient: ActorClass[TaskClient] = actorhub.remote(num_cpus=0)(TaskClient)


def _tasks_sync(timing: Timing, actors: list[Any]) -> Result:
    return timeit("single client tasks sync", lambda: actorhub.get(remote_small_value.remote()), 1, timing)


def _tasks_async(timing: Timing, actors: list[Any]) -> Result:
    return timeit(
        "single client tasks async",
        lambda: actorhub.get([remote_small_value.remote() for _ in range(BATCH)]),
        BATCH,
        timing,
    )


def _multi_client_tasks(timing: Timing, actors: list[Any]) -> Result:
    clients = [RemoteTaskClient.remote() for _ in range(MULTI_CLIENTS)]
    actors.extend(clients)
    return timeit(
        "multi client tasks async",
        lambda: actorhub.get([c.batch.remote(BATCH) for c in clients]),
        BATCH * MULTI_CLIENTS,
        timing,
    )


# Ray names these after its Plasma store; the names are kept so results pair with Ray's. A small
# value lives in its owner's table here, as it does in Ray's in-process memory store.
def _get_calls(timing: Timing, actors: list[Any]) -> Result:
    ref = actorhub.put(0)
    return timeit("single client get calls (Plasma Store)", lambda: actorhub.get(ref), 1, timing)


def _put_calls(timing: Timing, actors: list[Any]) -> Result:
    return timeit("single client put calls (Plasma Store)", lambda: actorhub.put(0), 1, timing)


def put_small_100() -> None:
    for _ in range(100):
        actorhub.put(0)


def put_large_10() -> None:
    import numpy

    for _ in range(10):
        actorhub.put(numpy.zeros(10 * 1024 * 1024, dtype=numpy.int64))


remote_put_small_100: RemoteFunction[[], None] = actorhub.remote(put_small_100)
remote_put_large_10: RemoteFunction[[], None] = actorhub.remote(put_large_10)


def _multi_put_calls(timing: Timing, actors: list[Any]) -> Result:
    return timeit(
        "multi client put calls (Plasma Store)",
        lambda: actorhub.get([remote_put_small_100.remote() for _ in range(10)]),
        1000,
        timing,
    )


def _multi_put_gigabytes(timing: Timing, actors: list[Any]) -> Result:
    # Ray's multiplier: 10 tasks x 10 arrays of 80 MiB, counted as 8 GB (its own arithmetic).
    return timeit(
        "multi client put gigabytes",
        lambda: actorhub.get([remote_put_large_10.remote() for _ in range(10)]),
        10 * 8 * 0.1,
        timing,
    )


def _tasks_and_get_batch(timing: Timing, actors: list[Any]) -> Result:
    return timeit(
        "single client tasks and get batch",
        lambda: actorhub.get([remote_small_value.remote() for _ in range(BATCH)]),
        1,
        timing,
    )


def _put_gigabytes(timing: Timing, actors: list[Any]) -> Result:
    import numpy

    # Ray's workload and count: an 800 MiB array (100 Mi int64s), counted as 0.8 per put.
    array = numpy.zeros(100 * 1024 * 1024, dtype=numpy.int64)
    return timeit("single client put gigabytes", lambda: actorhub.put(array), 8 * 0.1, timing)


def _wait_1k(timing: Timing, actors: list[Any]) -> Result:
    def wait_multiple_refs() -> None:
        not_ready = [remote_small_value.remote() for _ in range(1000)]
        while not_ready:
            _, not_ready = actorhub.wait(not_ready)

    return timeit("single client wait 1k refs", wait_multiple_refs, 1, timing)


def _get_object_with_refs(timing: Timing, actors: list[Any]) -> Result:
    ref = remote_refs_object.remote()
    actorhub.get(ref)
    return timeit("single client get object containing 10k refs", lambda: actorhub.get(ref), 1, timing)


def _get_100mb_array(timing: Timing, actors: list[Any]) -> Result:
    import numpy

    ref = actorhub.put(numpy.ones(LARGE_ITEMS, dtype=numpy.int64))
    actorhub.get(ref)
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        actorhub.get(ref)
        samples.append((time.perf_counter() - start) * 1000)
    return Result("get of a 100 MB numpy array (ms)", statistics.fmean(samples), statistics.pstdev(samples), digits=3)


TASK_METRICS: list[tuple[str, Callable[[Timing, list[Any]], Result]]] = [
    ("single client tasks sync per second", _tasks_sync),
    ("single client tasks async per second", _tasks_async),
    ("multi client tasks async per second", _multi_client_tasks),
    ("single client get calls (Plasma Store) per second", _get_calls),
    ("single client put calls (Plasma Store) per second", _put_calls),
    ("multi client put calls (Plasma Store) per second", _multi_put_calls),
    ("single client put gigabytes per second", _put_gigabytes),
    ("single client tasks and get batch per second", _tasks_and_get_batch),
    ("multi client put gigabytes per second", _multi_put_gigabytes),
    ("single client wait 1k refs per second", _wait_1k),
    ("single client get object containing 10k refs per second", _get_object_with_refs),
    ("get of a 100 MB numpy array (ms)", _get_100mb_array),
]
