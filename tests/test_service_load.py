"""Service load: replies leave as their calls end, many actors start at once, many callers and
streams are served without a thread each (issue 8).

The bounds here are failure detectors (the bugs they catch are hangs or waits of whole
seconds), not speed targets: those live in tests/perf/load_latency.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actorhub
from actorhub._proto.v1 import common_pb2, hub_pb2_grpc, worker_pb2, worker_pb2_grpc
from actorhub.cluster.session import latest_session
from actorhub.wire.transport import open_async_channel, open_channel


def _thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _actor_info(session_root: Path, actor_id: str) -> common_pb2.ActorInfo:
    session = latest_session(session_root)
    with open_channel(session.hub_address, session.token) as channel:
        status = hub_pb2_grpc.HubStub(channel).GetClusterStatus(common_pb2.Empty(), timeout=10)
    return next(a for a in status.actors if a.actor_id == actor_id)


@actorhub.remote
class Sleeper:
    def work(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@actorhub.remote(max_concurrency=2)
class ThreadedSleeper:
    def work(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@actorhub.remote
class AsyncSleeper:
    async def work(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


@actorhub.remote
def sleep_task(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("kind", [Sleeper, ThreadedSleeper, AsyncSleeper])
def test_a_reply_leaves_when_its_call_ends_not_after_the_next(cluster: Any, kind: Any) -> None:
    actor = kind.remote()
    actorhub.get(actor.work.remote(0))
    start = time.monotonic()
    fast = actor.work.remote(0.01)
    slow = actor.work.remote(1.5)
    ready, _ = actorhub.wait([fast, slow], num_returns=1, timeout=1.4)
    elapsed = time.monotonic() - start
    assert ready == [fast], "the short call's reply waited behind the long call sent after it"
    # 1.5 s would mean it waited for the long call; typically it takes ~15 ms.
    assert elapsed < 1.2
    assert actorhub.get(slow) == 1.5
    actorhub.kill(actor)


def test_a_task_result_leaves_when_the_task_ends(cluster: Any) -> None:
    actorhub.get(sleep_task.remote(0))
    fast = sleep_task.remote(0.01)
    slow = sleep_task.remote(1.5)
    ready, _ = actorhub.wait([fast, slow], num_returns=1, timeout=1.4)
    assert ready == [fast]
    assert actorhub.get(slow) == 1.5


@actorhub.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


def test_500_actors_created_at_once_each_answer_while_puts_keep_working(cluster: Any) -> None:
    put_times: list[float] = []
    stop = threading.Event()

    def put_meanwhile() -> None:
        payload = np.ones(1024 * 1024, dtype=np.uint8)  # 1 MiB
        while not stop.is_set():
            start = time.monotonic()
            ref = actorhub.put(payload)
            put_times.append(time.monotonic() - start)
            del ref
            time.sleep(0.2)

    putter = threading.Thread(target=put_meanwhile, daemon=True)
    putter.start()
    try:
        actors = [Counter.remote() for _ in range(500)]
        answers = actorhub.get([a.incr.remote() for a in actors], timeout=60)
    finally:
        stop.set()
        putter.join(10)
    assert answers == [1] * 500
    assert put_times, "no put finished while the actors were being created"
    assert max(put_times) < 5.0, f"a 1 MiB put took {max(put_times):.1f} s while actors started"
    # No kill() per actor (500 hub round trips): the fixture's shutdown ends them all, and the
    # leak check after it fails the test if any of the 500 workers is left.


@actorhub.remote
class Journal:
    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []

    def record(self, caller: int, seq: int) -> int:
        self.entries.append((caller, seq))
        return seq

    def all(self) -> list[tuple[int, int]]:
        return self.entries


@actorhub.remote
class JournalCaller:
    def call(self, journal: Any, me: int, count: int) -> list[int]:
        # Sent back to back without waiting: order must be kept by the stream, not by us.
        refs = [journal.record.remote(me, i) for i in range(count)]
        return actorhub.get(refs)


def test_300_callers_20_calls_each_none_lost_none_reordered(cluster: Any) -> None:
    journal = Journal.remote()
    callers = [JournalCaller.remote() for _ in range(300)]
    results = actorhub.get([c.call.remote(journal, i, 20) for i, c in enumerate(callers)], timeout=180)
    assert results == [list(range(20))] * 300
    entries = actorhub.get(journal.all.remote())
    assert len(entries) == 6000
    per_caller: dict[int, list[int]] = {}
    for caller, seq in entries:
        per_caller.setdefault(caller, []).append(seq)
    assert all(seqs == list(range(20)) for seqs in per_caller.values())
    assert len(per_caller) == 300


@actorhub.remote
class Pinger:
    def ping(self) -> int:
        return 1


@actorhub.remote
class TimedCaller:
    def time_one_call(self, target: Any) -> float:
        start = time.monotonic()
        actorhub.get(target.ping.remote(), timeout=30)
        return time.monotonic() - start


class _OpenStreams:
    """`count` CallStreams held open against one actor, on one event loop (no thread each)."""

    def __init__(self, address: str, token: str, actor_id: str, incarnation: int, count: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._first = worker_pb2.CallBatch(actor_id=actor_id, incarnation=incarnation, caller_id="load-test")
        self.taken = asyncio.run_coroutine_threadsafe(self._open(address, token, count), self._loop).result(120)

    async def _open(self, address: str, token: str, count: int) -> int:
        self._channel = open_async_channel(address, token)
        self._release = asyncio.Event()
        stub = worker_pb2_grpc.WorkerStub(self._channel)  # type: ignore[arg-type]
        self._calls = [stub.CallStream(self._requests()) for _ in range(count)]
        # Each stream is taken once the worker sent its initial metadata.
        await asyncio.gather(*(call.initial_metadata() for call in self._calls))
        return len(self._calls)

    async def _requests(self) -> Any:
        yield self._first
        await self._release.wait()

    def close(self) -> None:
        async def finish() -> None:
            self._release.set()
            for call in self._calls:
                call.cancel()
            await self._channel.close()

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_1000_open_streams_hold_no_thread_each_and_a_new_caller_is_answered(
    cluster: Any, session_root: Path
) -> None:
    target = Pinger.remote()
    assert actorhub.get(target.ping.remote()) == 1
    info = _actor_info(session_root, target.actor_id)
    threads_before = _thread_count(info.pid)
    caller = TimedCaller.remote()
    actorhub.get(caller.time_one_call.remote(Pinger.remote()))  # the caller's process is up
    token = latest_session(session_root).token
    streams = _OpenStreams(info.address, token, info.actor_id, info.incarnation, 1000)
    try:
        assert streams.taken == 1000
        threads_during = _thread_count(info.pid)
        assert threads_during < threads_before + 10, (threads_before, threads_during)
        took = actorhub.get(caller.time_one_call.remote(target), timeout=60)
        # It used to hang for good once ~256 streams held every server thread.
        assert took < 5.0
        assert actorhub.get(target.ping.remote(), timeout=30) == 1
    finally:
        streams.close()

