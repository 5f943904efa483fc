"""The node agent under a burst of StartActors (issue 8, "Threads").

A real node agent (a process, against the in-process fake hub of test_zygote.py, with the
stand-in worker of tests/_fake_worker.py) gets a couple hundred StartActors at once. Each
waits for a worker to be forked and to register, then for its constructor: on the agent's
event loop, none of them holds a thread, so all complete, the node keeps answering node info
and store calls meanwhile, and its thread count stays far below the number of starts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _wait import wait_for
from test_zygote import FakeHub, RunningNode, alive, assert_all_gone, descendants, fake_hub, session

from actorhub._proto.v1 import common_pb2, node_pb2
from actorhub.cluster.session import Session
from actorhub.config import RpcDeadlines
from actorhub.node import zygote as _zygote
from actorhub.object_store import shm as _shm
from actorhub.wire.store import NodeStoreClient
from actorhub.wire.transport import ChannelPool

__all__ = ["fake_hub", "session"]  # fixtures, shared with test_zygote.py

TESTS = Path(__file__).resolve().parent
STARTS = 200


@pytest.fixture(autouse=True)
def fake_worker_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_zygote.CHILD_ENTRY_ENV, "_fake_worker:run_worker")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def node(session: Session, fake_hub: tuple[FakeHub, str]) -> Iterator[RunningNode]:
    hub, hub_address = fake_hub
    running = RunningNode(session, hub, hub_address, "node-load")
    try:
        yield running
    finally:
        running.close()


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


class Sampler:
    """Watches the node while the starts run: its thread count, and how long node info and a
    1 MiB put (ReserveObject, the write, SealObject) and its OpenObject take."""

    def __init__(self, session: Session, node: RunningNode) -> None:
        self.node = node
        self.channels = ChannelPool(session.token)
        self.store = NodeStoreClient(self.channels, node.address, RpcDeadlines(store_s=30, fetch_s=30))
        self.value = _shm.serialize(os.urandom(1 << 20))
        self.arena: _shm.Arena | None = None
        self.max_threads = 0
        self.info_s: list[float] = []
        self.put_s: list[float] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self._threads = [
            threading.Thread(target=self._count_threads, daemon=True),
            threading.Thread(target=self._ask, daemon=True),
        ]

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(30)
        if self.arena is not None:
            self.arena.close()
        self.channels.close()

    def _count_threads(self) -> None:
        while not self.done.wait(0.02):
            self.max_threads = max(self.max_threads, threads_of(self.node.process.pid))

    def _ask(self) -> None:
        serial = 0
        while not self.done.wait(0.2):
            try:
                start = time.monotonic()
                self.node.info()
                self.info_s.append(time.monotonic() - start)

                serial += 1
                object_id = f"load-put-{serial}"
                start = time.monotonic()
                location = self.store.reserve(object_id, self.value.total_size, owner="", delete_first=[], writer="")
                assert location.arena
                if self.arena is None:
                    self.arena = _shm.Arena.open(Path(location.path))
                self.arena.write(location.offset, self.value)
                self.store.seal(object_id)
                opened = self.store.open(object_id, reader="load-test")
                self.put_s.append(time.monotonic() - start)
                assert opened.offset == location.offset
                self.store.release("load-test", [(object_id, opened.offset)])
                self.store.delete([object_id])
            except BaseException as e:
                self.errors.append(e)
                return


def test_a_burst_of_starts_holds_no_thread(session: Session, node: RunningNode) -> None:
    base_threads = threads_of(node.process.pid)
    requests = [
        node_pb2.NodeStartActorRequest(
            spec=common_pb2.ActorSpec(actor_id=f"load-{i}", class_name="Counter", num_cpus=0), incarnation=0,
        )
        for i in range(STARTS)
    ]
    started = time.monotonic()
    with Sampler(session, node) as sampler:
        # All in flight at once: futures of the sync client, sent from a few threads.
        calls: list[Any] = [None] * STARTS

        def send(first: int) -> None:
            for i in range(first, STARTS, 4):
                calls[i] = node.stub.StartActor.future(requests[i], timeout=180)

        senders = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        replies = [call.result() for call in calls]
        elapsed = time.monotonic() - started
        # A few more samples once the starts are over, so each list has some.
        time.sleep(0.5)

    print(f"{STARTS} starts in {elapsed:.1f} s; node threads: {base_threads} before, at most "
          f"{sampler.max_threads} during; node info at most {max(sampler.info_s, default=0):.2f} s, "
          f"1 MiB put+open at most {max(sampler.put_s, default=0):.2f} s "
          f"({len(sampler.info_s)}/{len(sampler.put_s)} samples)")
    assert not sampler.errors, sampler.errors
    failed = [(i, r.error.message) for i, r in enumerate(replies) if not r.ok]
    assert not failed, failed[:5]
    pids = {r.pid for r in replies}
    assert len(pids) == STARTS and all(alive(pid) for pid in pids)
    info = node.info()
    assert info.actor_workers == STARTS

    # The loop answered throughout, and no start held a thread of the node.
    assert sampler.info_s and max(sampler.info_s) < 5.0
    assert sampler.put_s and max(sampler.put_s) < 5.0
    assert sampler.max_threads < 60, sampler.max_threads

    family = descendants(node.process.pid)
    node.stub.Shutdown(common_pb2.Empty(), timeout=10)
    assert node.process.wait(timeout=30) == 0
    assert_all_gone(family | {node.process.pid}, timeout=15)


def test_starts_waiting_for_broken_workers_fail_with_the_boot_failure(
    session: Session, fake_hub: tuple[FakeHub, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every fork dies before it registers: waiting StartActors fail with why, not after a timeout.
    monkeypatch.setenv(_zygote.CHILD_ENTRY_ENV, "_fake_worker:no_such_entry")
    hub, hub_address = fake_hub
    node = RunningNode(session, hub, hub_address, "node-broken")
    try:
        started = time.monotonic()
        calls = [node.stub.StartActor.future(
            node_pb2.NodeStartActorRequest(spec=common_pb2.ActorSpec(actor_id=f"b-{i}", class_name="Counter")),
            timeout=60,
        ) for i in range(20)]
        replies = [call.result() for call in calls]
        assert time.monotonic() - started < 20
        for reply in replies:
            assert not reply.ok
            assert "fail to start" in reply.error.message, reply.error.message
        assert node.info().actor_workers == 0
        node.stub.Shutdown(common_pb2.Empty(), timeout=10)
        assert node.process.wait(timeout=30) == 0
    finally:
        node.close()


def test_the_loop_answers_during_a_100_mb_transfer(session: Session, fake_hub: tuple[FakeHub, str]) -> None:
    # PullObject and ReadObject copy on the store's executors: node info keeps answering on
    # both nodes while a 100 MB object crosses, and while a slow reader holds a stream open.
    hub, hub_address = fake_hub
    source = RunningNode(session, hub, hub_address, "node-src")
    puller = RunningNode(session, hub, hub_address, "node-dst")
    channels = ChannelPool(session.token)
    deadlines = RpcDeadlines(store_s=30, fetch_s=60)
    try:
        value = _shm.serialize(os.urandom(100 << 20))
        store = NodeStoreClient(channels, source.address, deadlines)
        location = store.reserve("big", value.total_size, owner="", delete_first=[], writer="")
        arena = _shm.Arena.open(Path(location.path))
        arena.write(location.offset, value)
        arena.close()
        store.seal("big")

        slowest: dict[str, float] = {}
        done = threading.Event()

        def ask(node: RunningNode) -> None:
            while not done.is_set():
                start = time.monotonic()
                node.info()
                slowest[node.address] = max(slowest.get(node.address, 0.0), time.monotonic() - start)
                time.sleep(0.01)

        askers = [threading.Thread(target=ask, args=(n,), daemon=True) for n in (source, puller)]
        for asker in askers:
            asker.start()
        try:
            # A reader that takes one chunk and stalls: its stream holds no thread of the source.
            stream = store.read("big", puller="slow-reader")
            first = next(iter(stream))
            assert first.total_size == value.total_size and first.offset == 0
            started = time.monotonic()
            NodeStoreClient(channels, puller.address, deadlines).pull("big", source.address, owner="")
            pull_s = time.monotonic() - started
            time.sleep(0.5)
            stream.cancel()
        finally:
            done.set()
            for asker in askers:
                asker.join(10)
        copy = NodeStoreClient(channels, puller.address, deadlines).open("big", reader="checker")
        with open(copy.path, "rb") as f:
            f.seek(copy.offset)
            head = f.read(value.header_size + 64)
        assert head[value.header_size:value.header_size + 64] == bytes(value.inband[:64])
        print(f"pulled 100 MB in {pull_s:.2f} s; slowest node info: {slowest}")
        assert len(slowest) == 2 and max(slowest.values()) < 2.0, slowest

        # Both streams let go of their pins (the cancelled one too): the freed region is reused.
        store.delete(["big"])
        wait_for(lambda: store.reserve(
            f"again-{time.monotonic()}", value.total_size, owner="", delete_first=[], writer="",
        ).offset == location.offset, "the source to reuse the region of the object it served", 10)
        for node in (source, puller):
            node.stub.Shutdown(common_pb2.Empty(), timeout=10)
            assert node.process.wait(timeout=30) == 0
    finally:
        channels.close()
        source.close()
        puller.close()
