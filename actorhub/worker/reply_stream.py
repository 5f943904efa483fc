"""ReplyStream: one caller's stream of replies, sent as calls finish.

Calls run on the actor's threads (or its event loop); the stream lives on the server's event
loop. A finished call posts its reply from whatever thread ran it, and the loop sends it at
once. Replies that are ready at the same moment leave together, in one ReplyBatch: batching is
natural, never a wait for more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from actorhub._proto.v1 import worker_pb2


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a stream's calls come from (its first batch says)."""

    address: str = ""
    node_id: str = ""

    @classmethod
    def of(cls, first: worker_pb2.CallBatch) -> Caller:
        return cls(first.caller_address, first.caller_node_id)


class ReplyStream:
    """Replies posted from any thread, drained on `loop` as ReplyBatches.

    `admitted` and `accept` are called on the loop (by the stream's reader); `post` from any
    thread. The stream ends once reading ended and every admitted call has replied.
    """

    __slots__ = (
        "_accepted",
        "_done",
        "_lock",
        "_loop",
        "_outstanding",
        "_reading",
        "_ready",
        "_waiter",
        "_wake_due",
        "caller",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, caller: Caller) -> None:
        self.caller = caller
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[worker_pb2.Reply] = []
        # True while a wake-up is on its way to the loop: later posts ride on it.
        self._wake_due = False
        self._waiter: asyncio.Future[None] | None = None
        self._outstanding = 0
        self._accepted = 0
        self._reading = True
        self._done = False

    # -- from any thread ------------------------------------------------------------------------
    def post(self, reply: worker_pb2.Reply) -> None:
        with self._lock:
            self._ready.append(reply)
            if self._wake_due:
                return
            self._wake_due = True
        if self._done:
            return  # the caller went away; the reply has no one to go to
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            pass  # the loop closed: the process is shutting down

    # -- on the loop ----------------------------------------------------------------------------
    def admitted(self, count: int) -> None:
        self._outstanding += count

    def accept(self, seq: int) -> None:
        """Acknowledge a sync point: every call sent before it is in the actor's mailbox."""
        self._accepted = seq
        self._wake()

    def end_of_calls(self) -> None:
        self._reading = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def batches(self) -> AsyncIterator[worker_pb2.ReplyBatch]:
        try:
            while True:
                with self._lock:
                    replies, self._ready = self._ready, []
                    self._wake_due = False
                accepted, self._accepted = self._accepted, 0
                if replies or accepted:
                    self._outstanding -= len(replies)
                    yield worker_pb2.ReplyBatch(accepted_seq=accepted, replies=replies)
                    continue
                if not self._reading and self._outstanding <= 0:
                    return
                self._waiter = self._loop.create_future()
                await self._waiter
                self._waiter = None
        finally:
            self._done = True
