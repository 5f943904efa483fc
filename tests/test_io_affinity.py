"""Each process keeps its event loop's thread and gRPC's poller thread on one CPU
(wire/io_affinity.py), and nothing else: the main thread, user code in every kind of actor and
task, and the threads user code starts keep all of the process's CPUs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import module_cluster

import actorhub
from actorhub.wire import io_affinity

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning is skipped on one CPU")

ALL_CPUS = set(os.sched_getaffinity(0))


def _thread_cpus() -> dict[str, set[int]]:
    """This process's Python threads by name, with the CPUs each may run on."""
    return {t.name: set(os.sched_getaffinity(t.native_id)) for t in threading.enumerate() if t.native_id}


def _io_pair(cpus_by_name: dict[str, set[int]]) -> tuple[set[int], set[int]]:
    loop = [cpus for name, cpus in cpus_by_name.items() if name == "actorhub-io"]
    poller = [cpus for name, cpus in cpus_by_name.items() if name.endswith("(_poll_wrapper)")]
    assert len(loop) == 1 and len(poller) == 1, sorted(cpus_by_name)
    return loop[0], poller[0]


def _started_thread_cpus() -> set[int]:
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(set(os.sched_getaffinity(0))))
    thread.start()
    thread.join()
    return seen[0]


@actorhub.remote
class Serial:
    def threads(self) -> dict[str, set[int]]:
        return _thread_cpus()

    def here(self) -> tuple[set[int], set[int]]:
        return set(os.sched_getaffinity(0)), _started_thread_cpus()


@actorhub.remote(max_concurrency=4)
class Threaded:
    def here(self) -> tuple[set[int], set[int]]:
        return set(os.sched_getaffinity(0)), _started_thread_cpus()


@actorhub.remote
class Async:
    async def here(self) -> tuple[set[int], set[int]]:
        in_executor = await asyncio.to_thread(os.sched_getaffinity, 0)
        return set(os.sched_getaffinity(0)), set(in_executor)


@actorhub.remote
def task_here() -> tuple[set[int], set[int]]:
    return set(os.sched_getaffinity(0)), _started_thread_cpus()


# First: the module's pinned cluster is not up yet (one cluster per driver at a time).
def test_pin_io_threads_off(session_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORHUB_PIN_IO_THREADS", "0")
    actorhub.init(num_cpus=2)
    try:
        loop, poller = _io_pair(actorhub.get(Serial.remote().threads.remote()))
        assert loop == poller == ALL_CPUS
    finally:
        actorhub.shutdown()


@pytest.fixture(scope="module")
def pinned_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[actorhub.ClusterContext]:
    with module_cluster(tmp_path_factory.mktemp("io-affinity")) as context:
        yield context


def test_the_loop_and_poller_threads_share_one_cpu_in_driver_and_worker(pinned_cluster: object) -> None:
    for where, threads in (("driver", _thread_cpus()), ("worker", actorhub.get(Serial.remote().threads.remote()))):
        loop, poller = _io_pair(threads)
        assert len(loop) == 1 and loop == poller, (where, loop, poller)
        assert threads["MainThread"] == ALL_CPUS, where


def test_user_code_and_the_threads_it_starts_keep_every_cpu(pinned_cluster: object) -> None:
    results = actorhub.get([
        Serial.remote().here.remote(),
        Threaded.remote().here.remote(),
        Async.remote().here.remote(),
        task_here.remote(),
    ])
    kinds = ("serial actor", "threaded actor", "async actor", "task")
    for kind, (running, started) in zip(kinds, results, strict=True):
        assert running == ALL_CPUS, kind
        assert started == ALL_CPUS, kind
    # And the driver's own threads, started from its main thread.
    assert _started_thread_cpus() == ALL_CPUS


def test_io_cpu_spreads_processes_over_the_allowed_cpus() -> None:
    cpus = {2, 5, 7}
    assert [io_affinity.io_cpu(cpus, pid) for pid in range(100, 106)] == [5, 7, 2, 5, 7, 2]
    assert io_affinity.io_cpu({3}, 12345) == 3


def test_release_is_a_no_op_for_a_thread_that_has_every_cpu() -> None:
    before = set(os.sched_getaffinity(0))
    io_affinity.release_current_thread()
    assert set(os.sched_getaffinity(0)) == before
