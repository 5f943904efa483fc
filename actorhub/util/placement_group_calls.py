"""A process's creations and removals of placement groups, sent to the hub in batches.

The hub answers a decision only once it is on disk, so a program that creates or removes
groups one after another would pay a round trip and an fsync each if it waited. Instead
`placement_group()` (anonymous) and `remove_placement_group()` queue the operation and return;
one sender thread takes everything queued while its previous batch was under way and sends it
as one `PlacementGroupBatch` (applied in order, one write). Every later operation on a group in
this process (wait, ready, the table, an actor or task placed in it) first waits for what was
queued for that group, and raises what it raised, so a process sees its own creations and
removals in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from actorhub.hub.bundles import group_of
from actorhub.wire.placement_groups import GroupCreate, GroupOp, PlacementGroupState

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime
    from actorhub.wire.hub import HubClient

__all__ = ["GroupCalls", "calls_of", "in_group", "removed_groups"]

Shape = Sequence[tuple[str, float]]

# Operations per batch: a message of bounded size, an answer within the control deadline.
_MAX_BATCH = 1000
_CLOSE_WAIT_S = 10.0


class GroupCalls:
    def __init__(self, hub: HubClient) -> None:
        self._hub = hub
        self._cond = threading.Condition()
        self._queue: list[tuple[GroupOp, Future[Any]]] = []
        # group id -> its last queued operation; kept after failing, so the next operation raises.
        self._last: dict[str, Future[Any]] = {}
        # Groups whose creation this process saw answered CREATED and has not removed since:
        # wait() needs no call to the hub for them.
        self.created: set[str] = set()
        self._sender: threading.Thread | None = None
        self._closed = False

    def submit(self, op: GroupOp) -> None:
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("this process's connection to the cluster is closed")
            self.created.discard(op.group_id)
            self._queue.append((op, future))
            self._last[op.group_id] = future
            if self._sender is None:
                self._sender = threading.Thread(target=self._send, name="placement-groups", daemon=True)
                self._sender.start()
            self._cond.notify()

    def settle(self, group_id: str) -> None:
        """Once what was queued for `group_id` is answered; raises what the last of it raised."""
        with self._cond:
            future = self._last.get(group_id)
        if future is not None:
            future.result()

    def queued(self, group_id: str) -> bool:
        with self._cond:
            future = self._last.get(group_id)
            return future is not None and not future.done()

    def settle_all(self) -> None:
        with self._cond:
            futures = list(self._last.values())
        wait(futures)

    def close(self) -> None:
        with self._cond:
            futures = list(self._last.values())
        wait(futures, timeout=_CLOSE_WAIT_S)
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _send(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            try:
                outcomes: list[Any] = self._hub.placement_group_batch([op for op, _ in batch])
            except Exception as e:  # every operation of the batch fails with it, at its waiter
                outcomes = [e] * len(batch)
            for (op, future), outcome in zip(batch, outcomes, strict=True):
                with self._cond:
                    last = self._last.get(op.group_id) is future
                    if not isinstance(outcome, Exception) and last:
                        del self._last[op.group_id]
                        if isinstance(op, GroupCreate) and getattr(outcome, "state", "") == "CREATED":
                            self.created.add(op.group_id)
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def in_group(shape: Sequence[tuple[str, float]]) -> bool:
    """Whether a task's shape (its resources besides CPUs) names a placement group's bundle."""
    return any(name.startswith("bundle_group_") for name, _ in shape)


def removed_groups(runtime: Runtime, live: Sequence[PlacementGroupState]) -> Callable[[Shape], bool]:
    """Whether a shape names a group that is gone: the hub lists it no more (`live`: the groups
    it has, not removed), and this process has nothing queued for it (a creation not sent yet)."""
    alive = {g.group_id for g in live}
    calls = _current[1] if _current is not None and _current[0] is runtime else None

    def gone(shape: Shape) -> bool:
        named = group_of([name for name, _ in shape])
        if named is None or named[0] in alive:
            return False
        return calls is None or not calls.queued(named[0])

    return gone


_current: tuple[Runtime, GroupCalls] | None = None
_current_lock = threading.Lock()


def calls_of(runtime: Runtime) -> GroupCalls:
    global _current
    with _current_lock:
        if _current is None or _current[0] is not runtime:
            calls = GroupCalls(runtime.hub)
            runtime.add_close_hook(calls.close)
            _current = (runtime, calls)
        return _current[1]
