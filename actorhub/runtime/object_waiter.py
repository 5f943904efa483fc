"""One blocked `wait()` on the object table (runtime/object_table.py)."""

from __future__ import annotations

import _thread


class ObjectWaiter:
    """One blocked wait(): woken once when `needed` more of its objects are ready.

    A bare lock, held from the start and released once, instead of a threading.Event: an
    Event is a Condition that makes a lock and a deque entry per wait, a large part of a sync
    get's own cost."""

    __slots__ = ("_gate", "ids", "needed")

    def __init__(self, ids: set[str], needed: int) -> None:
        self.ids = ids
        self.needed = needed
        self._gate = _thread.allocate_lock()
        self._gate.acquire()

    def wake(self) -> None:
        """Under the table's lock, once: when `needed` reaches 0."""
        self._gate.release()

    def block(self, timeout: float | None) -> None:
        self._gate.acquire(True, -1 if timeout is None else timeout)
