"""Concurrency groups (Ray's semantics): per-group limits, per-method and per-call groups."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _wait import wait_for

import actorhub
from actorhub.exceptions import OptionsError

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote(max_concurrency=2, concurrency_groups={"health": 1, "io": 2})
class ThreadedService:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.peak_io = 0
        self.io_running = 0
        self.lock = threading.Lock()

    def work(self) -> str:
        with self.lock:
            self.running += 1
        self.release.wait(30)
        with self.lock:
            self.running -= 1
        return "done"

    def busy(self) -> int:
        return self.running

    @actorhub.method(concurrency_group="health")
    def health(self) -> str:
        return "ok"

    @actorhub.method(concurrency_group="health")
    def finish_work(self) -> None:
        self.release.set()

    @actorhub.method(concurrency_group="io")
    def io(self, seconds: float) -> int:
        with self.lock:
            self.io_running += 1
            self.peak_io = max(self.peak_io, self.io_running)
        time.sleep(seconds)
        with self.lock:
            self.io_running -= 1
        return self.peak_io

    def thread_name(self) -> tuple[int, str]:
        return threading.get_ident(), threading.current_thread().name


@actorhub.remote(max_concurrency=3, concurrency_groups={"health": 1, "compute": 2})
class AsyncService:
    def __init__(self) -> None:
        self.release: asyncio.Event | None = None
        self.running = 0

    async def work(self) -> str:
        if self.release is None:
            self.release = asyncio.Event()
        self.running += 1
        await self.release.wait()
        return "done"

    async def blocking(self, seconds: float) -> str:
        time.sleep(seconds)  # blocks its group's event loop, and only that one
        return "done"

    async def busy(self) -> int:
        return self.running

    @actorhub.method(concurrency_group="health")
    async def health(self) -> str:
        return "ok"

    @actorhub.method(concurrency_group="health")
    def loop_id(self) -> int:
        return id(asyncio.get_event_loop())

    async def default_loop_id(self) -> int:
        return id(asyncio.get_running_loop())

    @actorhub.method(concurrency_group="compute")
    async def compute_loop_id(self) -> int:
        return id(asyncio.get_running_loop())

    @actorhub.method(concurrency_group="compute")
    async def gather(self, x: int, batch: list[int], event_holder: dict[str, asyncio.Event]) -> int:
        return x


def _health_latency(handle: actorhub.ActorHandle) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.monotonic()
        assert actorhub.get(handle.health.remote(), timeout=10) == "ok"
        best = min(best, time.monotonic() - start)
    return best


def test_threaded_health_group_answers_while_default_group_is_full() -> None:
    s = ThreadedService.remote()
    work = [s.work.remote() for _ in range(4)]  # 2 run (max_concurrency=2), 2 wait
    # busy runs in the default group too: ask through the health group's own thread instead.
    wait_for(lambda: actorhub.get(s.health.remote()) == "ok", "the health group to answer", 20)
    time.sleep(0.2)
    assert _health_latency(s) < 0.05
    assert not actorhub.wait(work, timeout=0)[0]  # the default group is still full
    actorhub.get(s.finish_work.remote())
    assert actorhub.get(work, timeout=30) == ["done"] * 4


def test_async_health_group_answers_while_default_group_is_full() -> None:
    s = AsyncService.remote()
    work = [s.work.remote() for _ in range(5)]  # 3 run, 2 wait for a slot
    wait_for(lambda: actorhub.get(s.busy.options(concurrency_group="compute").remote()) == 3,
             "three calls to run in the compute group", 20)
    assert _health_latency(s) < 0.05
    assert not actorhub.wait(work, timeout=0)[0]


def test_async_group_blocking_its_loop_does_not_block_others() -> None:
    s = AsyncService.remote()
    actorhub.get(s.__ray_ready__.remote())
    blocked = s.blocking.remote(3)  # blocks the default group's loop for 3 s
    time.sleep(0.3)
    start = time.monotonic()
    assert actorhub.get(s.health.remote(), timeout=10) == "ok"
    assert time.monotonic() - start < 1.0
    assert actorhub.get(blocked, timeout=10) == "done"


def test_async_groups_have_their_own_loops() -> None:
    s = AsyncService.remote()
    default = actorhub.get(s.default_loop_id.remote())
    health = actorhub.get(s.loop_id.remote())  # a sync method of an async actor runs on its group's loop
    compute = actorhub.get(s.compute_loop_id.remote())
    assert len({default, health, compute}) == 3
    # Per call: the compute group's loop runs a default-group method.
    assert actorhub.get(s.default_loop_id.options(concurrency_group="compute").remote()) == compute


def test_group_limit_is_kept() -> None:
    s = ThreadedService.remote()
    peaks = actorhub.get([s.io.remote(0.2) for _ in range(6)], timeout=30)
    assert max(peaks) == 2


def test_per_call_group_runs_there() -> None:
    s = ThreadedService.remote()
    default = actorhub.get(s.thread_name.remote())
    in_io = actorhub.get(s.thread_name.options(concurrency_group="io").remote())
    assert default[0] != in_io[0]
    assert in_io[1].startswith("actorhub-io")


def test_calls_in_one_group_keep_caller_order() -> None:
    @actorhub.remote(concurrency_groups={"log": 1})
    class Log:
        def __init__(self) -> None:
            self.items: list[int] = []

        @actorhub.method(concurrency_group="log")
        def add(self, i: int) -> None:
            self.items.append(i)

        def items_(self) -> list[int]:
            return self.items

    log = Log.remote()
    for i in range(300):
        log.add.remote(i)
    assert actorhub.get(log.items_.options(concurrency_group="log").remote()) == list(range(300))


def test_unknown_groups_are_refused_at_the_caller() -> None:
    s = ThreadedService.remote()
    with pytest.raises(OptionsError, match="nope"):
        s.health.options(concurrency_group="nope")

    @actorhub.remote(concurrency_groups={"a": 1})
    class Bad:
        @actorhub.method(concurrency_group="b")
        def f(self) -> None:
            pass

    with pytest.raises(OptionsError, match="'b'"):
        Bad.remote()
    with pytest.raises(OptionsError, match="concurrency_groups"):
        actorhub.remote(concurrency_groups={"a": 0})(ThreadedService._cls)  # type: ignore[attr-defined]
    with pytest.raises(OptionsError, match="concurrency_groups"):
        actorhub.remote(concurrency_groups={"": 1})(ThreadedService._cls)  # type: ignore[attr-defined]
    with pytest.raises(OptionsError, match="unknown option"):
        actorhub.method(concurrency_groups="x")  # type: ignore[call-overload]


def test_bare_method_decorator() -> None:
    @actorhub.remote
    class Plain:
        @actorhub.method
        def f(self) -> int:
            return 1

        @actorhub.method(num_returns=2)
        def two(self) -> tuple[int, int]:
            return 1, 2

    p = Plain.remote()
    assert actorhub.get(p.f.remote()) == 1
    assert actorhub.get(p.two.remote()) == [1, 2]


def test_many_callers_across_groups() -> None:
    s = ThreadedService.remote()
    actorhub.get(s.finish_work.remote())  # work() returns at once from now on
    results: list[object] = []

    def caller() -> None:
        refs = [s.work.remote() for _ in range(20)] + [s.health.remote() for _ in range(20)]
        results.extend(actorhub.get(refs, timeout=60))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("done") == 160 and results.count("ok") == 160
