"""Queue: a FIFO queue shared by drivers, tasks and actors, held by an async actor.

Ray's `ray.util.queue.Queue`. The queue object is a handle to its actor, so it pickles: pass
it to tasks and actors and they all put to and get from the same queue. Blocking waits
(`put` on a full queue, `get` on an empty one) happen inside the actor as coroutines, so any
number of callers can wait at once without holding a thread there.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Mapping
from typing import Any

from actorhub.api.cluster import get, kill, wait
from actorhub.api.remote import remote

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """get_nowait() (or get with block=False, or a timeout that passed) on an empty queue."""


class Full(_stdlib_queue.Full):
    """put_nowait() (or put with block=False, or a timeout that passed) on a full queue."""


class _QueueActor:
    """The queue itself: an asyncio.Queue, so waiting callers are coroutines of the actor's loop."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise Empty(f"the queue stayed empty for {timeout} s") from None

    async def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full (maxsize {self.maxsize})") from None

    async def put_nowait_batch(self, items: list[Any]) -> None:
        # All or nothing: a batch that does not fit adds no item.
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {self.queue.qsize()} "
                       f"and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)

    async def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    async def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > self.queue.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.queue.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]


_RemoteQueueActor = remote(_QueueActor)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _unwrapped(error: BaseException) -> BaseException:
    """The queue's own Empty or Full for a remote one (the call's error is also an instance of it)."""
    if isinstance(error, Empty):
        return Empty(*error.args[:1])
    if isinstance(error, Full):
        return Full(*error.args[:1])
    return error


class Queue:
    """A first-in, first-out queue; `maxsize` <= 0 means unbounded.

    `actor_options` are the options of the queue's actor (a name, a namespace, a lifetime...).
    """

    def __init__(self, maxsize: int = 0, actor_options: Mapping[str, Any] | None = None) -> None:
        self.maxsize = maxsize
        self.actor: Any = _RemoteQueueActor.options(**dict(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return int(get(self.actor.qsize.remote()))

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return bool(get(self.actor.empty.remote()))

    def full(self) -> bool:
        return bool(get(self.actor.full.remote()))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add `item`; on a full queue wait (up to `timeout` s, then Full), or with block=False raise Full."""
        if block:
            _check_timeout(timeout)
            ref = self.actor.put.remote(item, timeout)
        else:
            ref = self.actor.put_nowait.remote(item)
        try:
            get(ref)
        except (Empty, Full) as e:
            raise _unwrapped(e) from None

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if block:
            _check_timeout(timeout)
            ref = self.actor.put.remote(item, timeout)
        else:
            ref = self.actor.put_nowait.remote(item)
        try:
            await ref
        except (Empty, Full) as e:
            raise _unwrapped(e) from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; on an empty queue wait (up to `timeout` s, then
        Empty), or with block=False raise Empty."""
        if block:
            _check_timeout(timeout)
            ref = self.actor.get.remote(timeout)
        else:
            ref = self.actor.get_nowait.remote()
        try:
            return get(ref)
        except (Empty, Full) as e:
            raise _unwrapped(e) from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            _check_timeout(timeout)
            ref = self.actor.get.remote(timeout)
        else:
            ref = self.actor.get_nowait.remote()
        try:
            return await ref
        except (Empty, Full) as e:
            raise _unwrapped(e) from None

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items: list[Any]) -> None:
        """Add all of `items` at once, or none of them (Full) if they do not all fit."""
        if not isinstance(items, list):
            raise TypeError("Argument 'items' must be a list")
        try:
            get(self.actor.put_nowait_batch.remote(items))
        except Full as e:
            raise _unwrapped(e) from None

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return `num_items` items at once, or none of them (Empty) if fewer are queued."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        try:
            return list(get(self.actor.get_nowait_batch.remote(num_items)))
        except Empty as e:
            raise _unwrapped(e) from None

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """End the queue's actor: at once with force=True, else after the calls it has queued
        (killed if that takes more than `grace_period_s`). Items still queued are lost."""
        if self.actor is None:
            return
        if force:
            kill(self.actor, no_restart=True)
        else:
            done = self.actor.__ray_terminate__.remote()
            _, not_done = wait([done], timeout=grace_period_s)
            if not_done:
                kill(self.actor, no_restart=True)
        self.actor = None
