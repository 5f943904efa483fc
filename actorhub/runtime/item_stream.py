"""ItemStream: the items of one streaming call as they reach its caller, for its generator.

A streaming call (`num_returns="streaming"` or `"dynamic"`) yields items one by one in the
callee, and each comes back in a reply of its own (worker/streaming.py). The caller's actor
connection (wire/call_stream.py) asks the call's stream whether it `wants` an item, makes the
item's entry in the object table, completes it and then `deliver`s it here; its reader
(runtime/object_ref_generator.py) takes the refs in order. The stream's end is the completion
of the call's own result, which the reader reports with `end()`.

Items are counted by their index, not by arrival: a call sent again (its actor restarted, a
task's worker died) yields again from the start, and the items this stream had already are
dropped, as Ray does for retried generators. Thread-safe: items arrive on the connection's
thread, readers wait on theirs or on an event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from actorhub.runtime.object_ref import ObjectRef, RefCounts
from actorhub.runtime.object_table import ErrorOrigin


class ItemStream:
    __slots__ = ("_claimed", "_closed", "_cond", "_ended", "_loop_waiters", "_owner", "_ready", "_table", "origin")

    def __init__(self, table: RefCounts, owner_address: str, origin: ErrorOrigin | None = None) -> None:
        self._table = table
        # Whose error an item's is, when not the called method's (a task's, run by its executor).
        self.origin = origin
        self._owner = owner_address
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[ObjectRef[Any]] = deque()
        self._claimed = 0  # the next index wanted: the ones before it were taken in already
        self._ended = False
        self._closed = False  # the reader is gone: items are freed as they come
        self._loop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- the connection's side ----------------------------------------------------------------
    def wants(self, index: int) -> bool:
        """Claim item `index`; False for one this stream had already (a retried call yields its
        items again) or when nobody reads the stream any more."""
        with self._cond:
            if index < self._claimed or self._closed:
                return False
            self._claimed = index + 1
            return True

    def deliver(self, object_id: str) -> None:
        """Item `object_id` (claimed, its entry complete) is next in line for the reader."""
        # The ref counts the entry from here on; when the reader is gone, it is dropped at once
        # and the entry with it.
        ref: ObjectRef[Any] = ObjectRef(object_id, self._owner, self._table)
        with self._cond:
            if self._closed:
                return
            self._ready.append(ref)
            self._wake_locked()

    def end(self) -> None:
        """The call is over (its result is complete): nothing more will be delivered."""
        with self._cond:
            self._ended = True
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._cond.notify_all()
        waiters, self._loop_waiters = self._loop_waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop closed: its reader is gone

    # -- the reader's side --------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> ObjectRef[Any] | None:
        """The next item's ref, waiting for it; None once the stream ended with all taken.

        Raises TimeoutError when `timeout` (seconds) passed first.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._ended, timeout):
                raise TimeoutError(f"no item within {timeout} s")
            return self._ready.popleft() if self._ready else None

    async def take_async(self) -> ObjectRef[Any] | None:
        """As `take`, on an event loop: the loop keeps running while the item is on its way."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._ready:
                    return self._ready.popleft()
                if self._ended:
                    return None
                future: asyncio.Future[None] = loop.create_future()
                self._loop_waiters.append((loop, future))
            await future

    def ready(self) -> bool:
        """An item is there to take."""
        with self._cond:
            return bool(self._ready)

    def ended(self) -> bool:
        """The call is over; items not taken yet may remain."""
        with self._cond:
            return self._ended

    def close(self) -> None:
        """The reader is gone: drop the items it did not take, and those still to come."""
        with self._cond:
            self._closed = True
            dropped = list(self._ready)
            self._ready.clear()
        del dropped  # outside the lock: dropping refs only queues their release


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
