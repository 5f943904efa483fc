"""The objects a process knows: those it owns (call results, puts) and those it borrowed.

Values are kept serialized; `get` deserializes, so every reader gets its own copy (as in Ray,
objects are immutable). An owned value is freed when the last local ref is gone, unless the
ref escaped this process (was pickled): then it stays while its owner lives, because borrowers
are not counted yet.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from actorhub._proto.v1 import common_pb2

Callback = Callable[[], None]


@dataclass(frozen=True, slots=True)
class ErrorOrigin:
    """Where an error came from, for the message raised at get()."""

    function_name: str = ""
    actor_id: str = ""
    class_name: str = ""


class _Entry:
    __slots__ = ("callbacks", "data", "error", "escaped", "fetching", "origin", "owned", "refs", "stored")

    def __init__(self, owned: bool, origin: ErrorOrigin | None = None) -> None:
        self.data: bytes | None = None
        self.error: common_pb2.ErrorInfo | None = None
        self.origin = origin
        self.callbacks: list[Callback] | None = None
        self.refs = 0
        self.escaped = False
        self.owned = owned
        self.fetching = False
        # The value is in the node's shared-memory store; `data` is then an empty marker.
        self.stored = False

    @property
    def ready(self) -> bool:
        return self.data is not None or self.error is not None


Completion = tuple[str, bytes | None, common_pb2.ErrorInfo | None]


class _Waiter:
    """One blocked wait(): woken once when `needed` more of its objects are ready."""

    __slots__ = ("event", "ids", "needed")

    def __init__(self, ids: set[str], needed: int) -> None:
        self.ids = ids
        self.needed = needed
        self.event = threading.Event()


class ObjectTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._freed_stored: list[str] = []
        # Blocked wait() calls (a few: one per waiting thread). A completion checks each for
        # its id, so waiting for n objects costs O(n), not a rescan of all n per completion.
        self._waiters: list[_Waiter] = []
        # Ids whose ObjectRef was collected; applied under the lock by the next operation.
        self._released: deque[str] = deque()

    # -- reference counting -------------------------------------------------------------
    def add_local_ref(self, object_id: str) -> None:
        with self._lock:
            self._drain_released()
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.refs += 1

    def drop_local_ref(self, object_id: str) -> None:
        self._released.append(object_id)

    def unescape(self, object_id: str) -> None:
        """A ref that was pickled only into one call: once the call is over it may be freed."""
        entry = self._entries.get(object_id)
        if entry is not None:
            entry.escaped = False

    def mark_escaped(self, object_id: str) -> None:
        entry = self._entries.get(object_id)
        if entry is not None:
            entry.escaped = True

    def _drain_released(self) -> None:
        released = self._released
        entries = self._entries
        while released:
            object_id = released.popleft()
            entry = entries.get(object_id)
            if entry is None:
                continue
            entry.refs -= 1
            if entry.refs <= 0 and not (entry.owned and entry.escaped) and not entry.callbacks:
                del entries[object_id]
                if entry.stored and entry.owned:
                    self._freed_stored.append(object_id)

    # -- creation and completion ----------------------------------------------------------
    def create_pending(self, object_ids: Sequence[str], origin: ErrorOrigin) -> None:
        with self._lock:
            for object_id in object_ids:
                self._entries[object_id] = _Entry(True, origin)

    def put_ready(self, object_id: str, data: bytes) -> None:
        entry = _Entry(True)
        entry.data = data
        with self._lock:
            self._entries[object_id] = entry

    def put_stored(self, object_id: str) -> None:
        entry = _Entry(True)
        entry.data = b""
        entry.stored = True
        with self._lock:
            self._entries[object_id] = entry

    def complete_stored(self, object_id: str) -> None:
        """A borrowed object turned out to be in this node's store: readers map it from there."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.stored = True
        self.complete_many([(object_id, b"", None)])

    def is_stored(self, object_id: str) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.stored

    def collect_freed_stored(self) -> list[str]:
        """Owned stored objects whose last ref is gone: the store may delete them."""
        with self._lock:
            self._drain_released()
            freed, self._freed_stored = self._freed_stored, []
            return freed

    def ensure_borrowed(self, object_id: str) -> None:
        """Make an entry for a ref owned elsewhere (before its ObjectRef counts itself)."""
        with self._lock:
            if object_id not in self._entries:
                self._entries[object_id] = _Entry(False)

    def claim_fetch(self, object_id: str) -> bool:
        """True when the caller should fetch this borrowed object from its owner now."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None:
                entry = self._entries[object_id] = _Entry(False)
            if entry.ready or entry.fetching or entry.owned:
                return False
            entry.fetching = True
            return True

    def complete_many(self, completions: Iterable[Completion]) -> None:
        fire: list[Callback] = []
        with self._lock:
            entries = self._entries
            waiters = self._waiters
            for object_id, data, error in completions:
                entry = entries.get(object_id)
                if entry is None or entry.ready:
                    continue  # nobody holds a ref any more, or already settled
                entry.data = data
                entry.error = error
                entry.fetching = False
                if entry.callbacks:
                    fire.extend(entry.callbacks)
                    entry.callbacks = None
                for waiter in waiters:
                    if object_id in waiter.ids:
                        waiter.needed -= 1
                        if waiter.needed == 0:
                            waiter.event.set()
        for callback in fire:
            callback()

    def set_origin(self, object_ids: Iterable[str], origin: ErrorOrigin) -> None:
        """Name where an error came from when it is not the call that made these objects."""
        with self._lock:
            for object_id in object_ids:
                entry = self._entries.get(object_id)
                if entry is not None and not entry.ready:
                    entry.origin = origin

    def fail_fetch(self, object_id: str, error: common_pb2.ErrorInfo) -> None:
        self.complete_many([(object_id, None, error)])

    # -- reading ------------------------------------------------------------------------------
    def has(self, object_id: str) -> bool:
        return object_id in self._entries

    def is_ready(self, object_id: str) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.ready

    def read(self, object_id: str) -> tuple[bytes | None, common_pb2.ErrorInfo | None, ErrorOrigin | None]:
        entry = self._entries.get(object_id)
        if entry is None or not entry.ready:
            raise KeyError(object_id)
        return entry.data, entry.error, entry.origin

    def wait(self, object_ids: Sequence[str], num_ready: int, timeout: float | None) -> list[bool]:
        """Block until at least `num_ready` of the ids are ready or the timeout passes.

        Returns readiness per id. Unknown ids count as never ready.
        """
        entries = self._entries
        with self._lock:
            missing = [i for i in object_ids if (e := entries.get(i)) is None or not e.ready]
            ready_now = len(object_ids) - len(missing)
            if ready_now >= num_ready or (timeout is not None and timeout <= 0):
                if not missing:
                    return [True] * len(object_ids)
                absent = set(missing)
                return [i not in absent for i in object_ids]
            waiter = _Waiter(set(missing), num_ready - ready_now)
            self._waiters.append(waiter)
        try:
            waiter.event.wait(timeout)
        finally:
            # Also on KeyboardInterrupt: an abandoned waiter would be checked by every completion.
            with self._lock:
                self._waiters.remove(waiter)
        with self._lock:
            return [(e := entries.get(i)) is not None and e.ready for i in object_ids]

    def add_callback(self, object_id: str, callback: Callback) -> None:
        """Run `callback` once the object is ready (at once if it already is)."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is not None and not entry.ready:
                if entry.callbacks is None:
                    entry.callbacks = []
                entry.callbacks.append(callback)
                return
        callback()

    def __len__(self) -> int:
        with self._lock:
            self._drain_released()
            return len(self._entries)
