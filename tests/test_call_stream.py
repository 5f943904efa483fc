"""The caller's side of an actor against a stand-in hub and worker, served over loopback gRPC.

These cover what a real worker seldom does on cue: refuse a stream before taking it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc, worker_pb2, worker_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.runtime.borrowing import Borrowing
from actorhub.runtime.object_table import ObjectTable
from actorhub.wire.call_stream import ActorConnection
from actorhub.wire.hub import HubClient
from actorhub.wire.server import ServerLoop, bind, make_server
from actorhub.wire.stream_loop import StreamLoop
from actorhub.wire.transport import STREAM_TAKEN, AsyncChannelPool, ChannelPool

TOKEN = "7" * 64


class _Hub(hub_pb2_grpc.HubServicer):
    def __init__(self) -> None:
        self.worker_address = ""

    def WaitActor(self, request: hub_pb2.WaitActorRequest, context: grpc.ServicerContext) -> common_pb2.ActorInfo:
        return common_pb2.ActorInfo(
            actor_id=request.actor_id, state=common_pb2.ACTOR_STATE_ALIVE, address=self.worker_address, incarnation=0
        )


class _Worker(worker_pb2_grpc.WorkerServicer):
    """Refuses its first `refusals` streams after reading their first batch, without the header
    that says it took them; then echoes each call's method name as its value."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def CallStream(
        self, request_iterator: Iterator[worker_pb2.CallBatch], context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.ReplyBatch]:
        first = next(request_iterator)
        with self._lock:
            self.seen.extend(c.method for c in first.calls)
            refuse = self.refusals > 0
            self.refusals -= 1
        if refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        context.send_initial_metadata((STREAM_TAKEN,))
        batch: worker_pb2.CallBatch | None = first
        while batch is not None:
            out = worker_pb2.ReplyBatch()
            for call in batch.calls:
                out.replies.add(seq=call.seq, values=[call.method.encode()])
            if out.replies:
                yield out
            batch = next(request_iterator, None)


class _Host:
    """What an ActorConnection needs from a runtime, and nothing else."""

    def __init__(self, hub_address: str) -> None:
        self.objects = ObjectTable()
        self.channels = ChannelPool(TOKEN)
        self.hub = HubClient(self.channels, hub_address, RpcDeadlines())
        self.caller_id = "c0ffee"
        self.address = "127.0.0.1:1"  # lends nothing in these tests
        self.node_id = ""
        self.borrowing = Borrowing(self.objects, self.channels, self.address, RpcDeadlines())
        # Call streams run on a process's server loop; this one serves nothing.
        self.loop = ServerLoop(TOKEN, name="stand-in-streams")
        self.streams = StreamLoop(self.loop, AsyncChannelPool(TOKEN))

    def close(self) -> None:
        self.borrowing.close()
        self.streams.close()
        self.loop.stop()
        self.channels.close()

    def note_unsent(self, conn: Any) -> None:
        pass

    def forget_connection(self, conn: Any) -> None:
        pass


@pytest.fixture
def stand_ins() -> Iterator[tuple[_Host, _Worker]]:
    hub, worker = _Hub(), _Worker(refusals=2)
    servers = [make_server(TOKEN, max_workers=8) for _ in range(2)]
    hub_pb2_grpc.add_HubServicer_to_server(hub, servers[0])
    worker_pb2_grpc.add_WorkerServicer_to_server(worker, servers[1])
    hub_address = bind(servers[0], "127.0.0.1")
    hub.worker_address = bind(servers[1], "127.0.0.1")
    for server in servers:
        server.start()
    host = _Host(hub_address)
    try:
        yield host, worker
    finally:
        host.close()
        for server in servers:
            server.stop(None)


def test_calls_on_a_stream_the_worker_never_took_are_sent_again_uncounted(stand_ins: tuple[_Host, _Worker]) -> None:
    host, worker = stand_ins
    # max_task_retries=0: had the refused calls counted as failed deliveries, they would fail.
    conn = ActorConnection(host, "a1", "Echo", max_task_retries=0, max_pending_calls=-1)
    try:
        ids = [conn.submit(name, b"", 1, None)[0] for name in ("one", "two", "three")]
        assert host.objects.wait(ids, len(ids), timeout=30) == [True] * 3
        assert [host.objects.read(i)[:2] for i in ids] == [(b"one", None), (b"two", None), (b"three", None)]
        # Each refused stream had read its first batch; the last stream ran them, in order.
        assert worker.seen[-3:] == ["one", "two", "three"] and worker.refusals < 0
    finally:
        conn.close()
