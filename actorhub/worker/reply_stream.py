"""ReplyStream: one caller's stream of replies, sent as calls finish.

Calls run on the actor's threads (or its event loop); the stream lives on the server's event
loop. A finished call posts its reply from whatever thread ran it, and the loop sends it at
once. Replies that are ready at the same moment leave together, in one ReplyBatch: batching is
natural, never a wait for more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from actorhub._proto.v1 import worker_pb2


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a stream's calls come from (its first batch says)."""

    address: str = ""
    node_id: str = ""
    caller_id: str = ""  # its calls' ids are "<caller_id>.<seq>" (get_runtime_context().get_task_id())

    @classmethod
    def of(cls, first: worker_pb2.CallBatch) -> Caller:
        return cls(first.caller_address, first.caller_node_id, first.caller_id)


class ReplyStream:
    """Replies posted from any thread, drained on `loop` as ReplyBatches.

    `admitted` and `accept` are called on the loop (by the stream's reader); `post` from any
    thread. The stream ends once reading ended and every admitted call has replied.
    """

    __slots__ = (
        "_accepted",
        "_answered",
        "_done",
        "_items",
        "_lock",
        "_loop",
        "_outstanding",
        "_pending",
        "_reading",
        "_ready",
        "_waiter",
        "_wake_due",
        "caller",
        "moved",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, caller: Caller) -> None:
        self.caller = caller
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[worker_pb2.Reply] = []
        self._items = 0  # of the replies in _ready, the items of streaming calls: they end no call
        # True while a wake-up is on its way to the loop: later posts ride on it.
        self._wake_due = False
        self._waiter: asyncio.Future[None] | None = None
        self._outstanding = 0
        self._accepted = 0
        self._reading = True
        self._done = False
        # Seqs of the calls admitted and not replied to yet, and those of them a cancel answered
        # already (their own reply, if they ever end, is dropped): each call gets one reply.
        self._pending: set[int] = set()
        self._answered: set[int] = set()
        # Ended by a drain (worker/drain.py): the calls not answered never ran, and never will here.
        self.moved = False

    # -- from any thread ------------------------------------------------------------------------
    def post(self, reply: worker_pb2.Reply) -> None:
        with self._lock:
            if self._answered and reply.seq in self._answered:
                self._answered.discard(reply.seq)
                return  # cancelled while it ran: the cancel was its reply
            self._pending.discard(reply.seq)
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

    def post_item(self, reply: worker_pb2.Reply) -> bool:
        """One item of a streaming call (worker/streaming.py): sent as a reply, but the call goes
        on. False when the caller went away: nobody takes more items."""
        with self._lock:
            self._ready.append(reply)
            self._items += 1
            if self._wake_due:
                return not self._done
            self._wake_due = True
        if self._done:
            return False
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            return False  # the loop closed: the process is shutting down
        return True

    def answered(self, seq: int) -> bool:
        """Call `seq` was cancelled before it started: it must not run (nor reply: see skip)."""
        return bool(self._answered) and seq in self._answered

    def skip(self, seq: int) -> None:
        """Call `seq`, answered by a cancel, will never run."""
        with self._lock:
            self._answered.discard(seq)

    # -- on the loop ----------------------------------------------------------------------------
    def track(self, seqs: Iterable[int]) -> None:
        """Calls admitted: each is pending until it replies (or a cancel answers it)."""
        with self._lock:
            self._pending.update(seqs)

    def cancel(self, seq: int, reply: worker_pb2.Reply) -> bool:
        """Answer call `seq` with `reply` (TaskCancelledError) now, unless it replied already;
        True when it did. A call still queued then never runs; one running finishes unheard."""
        with self._lock:
            if seq not in self._pending:
                return False
            self._pending.discard(seq)
            self._answered.add(seq)
            self._ready.append(reply)
        self._wake()
        return True

    @property
    def unsent(self) -> bool:
        """Replies are posted that have not left yet (and the caller is still there)."""
        return bool(self._ready) and not self._done

    def admitted(self, count: int) -> None:
        self._outstanding += count

    def accept(self, seq: int) -> None:
        """Acknowledge a sync point: every call sent before it is in the actor's mailbox."""
        self._accepted = seq
        self._wake()

    def end_of_calls(self) -> None:
        self._reading = False
        self._wake()

    def end_moved(self) -> None:
        """End the stream once the replies posted so far are sent, answered or not: the actor
        is leaving this process (a drain) and runs none of the calls left."""
        self.moved = True
        self.end_of_calls()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def batches(self) -> AsyncIterator[worker_pb2.ReplyBatch]:
        try:
            while True:
                with self._lock:
                    replies, self._ready = self._ready, []
                    items, self._items = self._items, 0
                    self._wake_due = False
                accepted, self._accepted = self._accepted, 0
                if replies or accepted:
                    self._outstanding -= len(replies) - items
                    yield worker_pb2.ReplyBatch(accepted_seq=accepted, replies=replies)
                    continue
                if not self._reading and (self._outstanding <= 0 or self.moved):
                    return
                self._waiter = self._loop.create_future()
                await self._waiter
                self._waiter = None
        finally:
            self._done = True
