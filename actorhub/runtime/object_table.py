"""The objects a process knows: those it owns (call results, puts) and those it borrowed.

Values are kept serialized; `get` deserializes, so every reader gets its own copy (as in Ray,
objects are immutable).

Reference counting. An owned object is freed when no ObjectRef to it is alive here, no
borrower holds it, and it did not escape (a ref pickled outside any call cannot be tracked,
so that object stays while its owner lives). A borrowed entry counts its refs here and how
many times its owner registered this process as a borrower; when the last ref goes, the
registrations are given back (`take_releases`). A value that contains refs pins them
(`contained`) for as long as the value is kept. Actors this process created are pseudo-objects
here too (runtime/actor_refs.py): their refs are strong handles, and their end ends the actor.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorhub.runtime.actor_refs import is_actor_ref
from actorhub.runtime.ids import split_store_id
from actorhub.runtime.object_waiter import ObjectWaiter
from actorhub.wire.errors import RemoteError
from actorhub.wire.records import OwnedObject

if TYPE_CHECKING:
    from actorhub.runtime.object_ref import ObjectRef

Callback = Callable[[], None]


@dataclass(frozen=True, slots=True)
class ErrorOrigin:
    """Where an error came from, for the message raised at get()."""

    function_name: str = ""
    actor_id: str = ""
    class_name: str = ""


class _Entry:
    __slots__ = (
        "borrowers",
        "callbacks",
        "contained",
        "data",
        "error",
        "escaped",
        "fetching",
        "origin",
        "owned",
        "owner",
        "refs",
        "registrations",
        "store_id",
    )

    def __init__(self, owned: bool, origin: ErrorOrigin | None = None, owner: str = "") -> None:
        self.data: bytes | None = None
        self.error: RemoteError | None = None
        self.origin = origin
        self.callbacks: list[Callback] | None = None
        self.refs = 0
        self.escaped = False
        self.owned = owned
        self.owner = owner  # of a borrowed entry: where its registrations are given back
        self.fetching = False
        # Set when the value is in the node's shared-memory store: its id there (the object's
        # own id, unless whoever computed it stored it); `data` is then an empty marker.
        self.store_id = ""
        # Refs inside the value, kept alive with it.
        self.contained: list[ObjectRef[Any]] | None = None
        # Owned: borrower address -> registrations. Borrowed: this process's registrations.
        self.borrowers: dict[str, int] | None = None
        self.registrations = 0

    @property
    def ready(self) -> bool:
        return self.data is not None or self.error is not None


Completion = tuple[str, bytes | None, RemoteError | None]
# A borrowed object's registrations to give back to its owner: (owner, object id, count).
Release = tuple[str, str, int]


class ObjectTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._freed_stored: list[str] = []
        # Owned stored values' bytes there, by object id, as their put or the callee that stored
        # them told: DEFAULT task placement weighs arguments by them (tasks/task_placement.py).
        # Kept apart from the entries: an inline value pays nothing for it.
        self._stored_bytes: dict[str, int] = {}
        # Blocked wait() calls (a few: one per waiting thread). A completion checks each for
        # its id, so waiting for n objects costs O(n), not a rescan of all n per completion.
        self._waiters: list[ObjectWaiter] = []
        # Ids whose ObjectRef was collected; applied under the lock by the next operation.
        self._released: deque[str] = deque()
        self._releases: list[Release] = []
        # Owned actor pseudo-objects (runtime/actor_refs.py) whose last holder went: their actors end.
        self._unreferenced_actors: list[str] = []
        # Told, under the lock, of each owned object that leaves: lineage (tasks/lineage.py) drops what made it.
        self.on_forget: Callable[[str], None] | None = None

    # -- reference counting -------------------------------------------------------------
    def add_local_ref(self, object_id: str) -> None:
        with self._lock:
            self._drain_released()
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.refs += 1

    def drop_local_ref(self, object_id: str) -> None:
        self._released.append(object_id)

    def adopt(self, object_id: str, owner: str, owned: bool, lent: bool = False) -> bool:
        """Count one more ref that arrived inside a message; True if the entry is new here.

        `lent`: the ref's owner registered this process as its borrower already (on behalf of
        whoever sent it), which the entry counts. Draining comes first, under the same lock: a
        release of an older ref to this id must not delete the entry the new ref is counted in.
        """
        with self._lock:
            self._drain_released()
            entry = self._entries.get(object_id)
            created = entry is None
            if entry is None:
                if owned:
                    return False  # freed already; get() reports it lost
                entry = self._entries[object_id] = _Entry(False, owner=owner)
            entry.refs += 1
            if lent and not entry.owned:
                entry.registrations += 1
            return created

    def mark_escaped(self, object_id: str) -> None:
        entry = self._entries.get(object_id)
        if entry is not None:
            entry.escaped = True

    def to_register(self, object_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Borrowed ids still held here that their owners do not know of: (owner, id) each.

        They are marked registered: the caller registers them before anything else could
        give them back.
        """
        out: list[tuple[str, str]] = []
        with self._lock:
            self._drain_released()
            for object_id in set(object_ids):
                entry = self._entries.get(object_id)
                if entry is not None and not entry.owned and entry.refs > 0 and not entry.registrations:
                    entry.registrations = 1
                    out.append((entry.owner, object_id))
        return out

    def own_actor_ref(self, object_id: str) -> None:
        """An owned pseudo-object standing for an actor this process created: its refs are the
        actor's strong handles, and its end (no ref, no borrower) ends the actor."""
        with self._lock:
            self._entries[object_id] = _Entry(True)

    def take_unreferenced_actors(self) -> list[str]:
        with self._lock:
            self._drain_released()
            ended, self._unreferenced_actors = self._unreferenced_actors, []
            return ended

    def take_releases(self) -> list[Release]:
        with self._lock:
            self._drain_released()
            releases, self._releases = self._releases, []
            return releases

    def add_borrower(self, object_id: str, borrower: str, count: int = 1) -> bool:
        """Register `borrower` for an owned object; False if this process no longer has it."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None or not entry.owned:
                return False
            if entry.borrowers is None:
                entry.borrowers = {}
            entry.borrowers[borrower] = entry.borrowers.get(borrower, 0) + count
            return True

    def remove_borrower(self, object_id: str, borrower: str, count: int) -> None:
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None or not entry.borrowers or borrower not in entry.borrowers:
                return
            left = entry.borrowers[borrower] - count
            if left > 0:
                entry.borrowers[borrower] = left
            else:
                del entry.borrowers[borrower]
            if entry.refs <= 0:
                self._forget_if_unused(object_id, entry)
            self._drain_released()

    def forget_borrower(self, borrower: str) -> None:
        """A borrower process died: whatever it held is not held any more."""
        with self._lock:
            for object_id, entry in list(self._entries.items()):
                if entry.borrowers and entry.borrowers.pop(borrower, None) is not None and entry.refs <= 0:
                    self._forget_if_unused(object_id, entry)
            self._drain_released()

    def borrower_addresses(self) -> set[str]:
        with self._lock:
            return {b for e in self._entries.values() if e.borrowers for b in e.borrowers}

    def attach_contained(self, object_id: str, refs: list[ObjectRef[Any]]) -> None:
        """Keep `refs` (found inside the object's value) alive as long as the object."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.contained = (entry.contained or []) + refs

    def contained_of(self, object_id: str) -> list[ObjectRef[Any]]:
        entry = self._entries.get(object_id)
        return list(entry.contained) if entry is not None and entry.contained else []

    def _drain_released(self) -> None:
        released = self._released
        entries = self._entries
        while released:
            object_id = released.popleft()
            entry = entries.get(object_id)
            if entry is None:
                continue
            entry.refs -= 1
            if entry.refs <= 0:
                self._forget_if_unused(object_id, entry)

    def _forget_if_unused(self, object_id: str, entry: _Entry) -> None:
        """Under the lock, for an entry with no local refs left: delete it unless still needed."""
        if entry.callbacks or (entry.owned and (entry.escaped or entry.borrowers)):
            return
        del self._entries[object_id]
        if entry.owned:
            if self.on_forget is not None:
                self.on_forget(object_id)
            if entry.store_id:
                self._freed_stored.append(entry.store_id)
                self._stored_bytes.pop(object_id, None)
            elif is_actor_ref(object_id):
                self._unreferenced_actors.append(object_id)
        elif entry.registrations and not entry.escaped:
            # An escaped borrowed ref may live on in bytes we cannot see: its owner keeps the
            # registration until this process exits.
            self._releases.append((entry.owner, object_id, entry.registrations))
        # Dropping the value's own refs queues their releases; the drain loop takes them next.
        entry.contained = None

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

    def put_stored(self, object_id: str, size: int) -> None:
        entry = _Entry(True)
        entry.data = b""
        entry.store_id = object_id
        with self._lock:
            self._entries[object_id] = entry
            self._stored_bytes[object_id] = size

    def complete_stored(self, object_id: str, store_id: str) -> None:
        """A borrowed object turned out to be in this node's store: readers map it from there."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is not None:
                entry.store_id = store_id
        self.complete_many([(object_id, b"", None)])

    def store_results(self, object_ids: Sequence[str], store_ids: Iterable[str], sizes: Sequence[int] = ()) -> None:
        """Before completing them: results of this process that the callee put in the store,
        with their bytes there (per store id; none from a callee that does not tell them).

        One nobody here holds any more (or with no object to go to) is freed at once.
        """
        with self._lock:
            for index, store_id in enumerate(store_ids):
                if not store_id:
                    continue
                entry = self._entries.get(object_ids[index]) if index < len(object_ids) else None
                if entry is None:
                    self._freed_stored.append(store_id)
                else:
                    entry.store_id = store_id
                    if index < len(sizes):
                        self._stored_bytes[object_ids[index]] = sizes[index]

    def complete_as(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Complete each `to` object with the value of the ready `from` object, which hands over
        the refs its value holds and its store entry (it stops freeing it)."""
        completions: list[Completion] = []
        with self._lock:
            for source_id, target_id in pairs:
                source = self._entries[source_id]
                target = self._entries.get(target_id)
                if source.store_id:
                    size = self._stored_bytes.pop(source_id, 0)
                    if target is None:
                        self._freed_stored.append(source.store_id)
                    else:
                        target.store_id = source.store_id
                        if size:
                            self._stored_bytes[target_id] = size
                    source.store_id = ""
                if target is not None and source.contained:
                    target.contained = (target.contained or []) + source.contained
                completions.append((target_id, source.data, None))
        self.complete_many(completions)

    def discard_stored(self, store_ids: Iterable[str]) -> None:
        """Stored values that no object of this process will hold: the store may delete them."""
        with self._lock:
            self._freed_stored.extend(store_ids)

    def is_stored(self, object_id: str) -> bool:
        return bool(self.store_id_of(object_id))

    def held_store_ids(self, store_ids: Iterable[str]) -> list[str]:
        """Which of these ids (as node stores know them) a value of this table is stored under."""
        with self._lock:
            held = {split_store_id(e.store_id)[0] for e in self._entries.values() if e.store_id}
        return [i for i in store_ids if i in held]

    def is_own_put(self, store_id: str) -> bool:
        """Whether this process stored the value under this id itself: an object it owns and
        keeps in the store under its own id, as `put` does (a callee's result has another)."""
        entry = self._entries.get(store_id)
        return entry is not None and entry.owned and entry.store_id == store_id

    def store_id_of(self, object_id: str) -> str:
        """The object's id in the node's store, "" when its value is not there."""
        entry = self._entries.get(object_id)
        return entry.store_id if entry is not None else ""

    def stored_bytes_of(self, object_id: str) -> int:
        """A stored owned object's bytes in the store; 0 when not known here (a borrowed one)."""
        return self._stored_bytes.get(object_id, 0)

    def collect_freed_stored(self) -> list[str]:
        """Owned stored objects whose last ref is gone: the store may delete them."""
        with self._lock:
            self._drain_released()
            freed, self._freed_stored = self._freed_stored, []
            return freed

    def check_known(self, refs: Sequence[tuple[str, str]], me: str) -> tuple[list[str], list[tuple[str, str]]]:
        """For (id, owner) pairs: the ids owned by `me` that are gone, and the borrowed
        (id, owner) pairs the caller should fetch now (marked fetching, so that nobody fetches them twice).

        One lock round for the whole list: get() and wait() call it on every blocking call."""
        lost: list[str] = []
        fetch: list[tuple[str, str]] = []
        with self._lock:
            entries = self._entries
            for object_id, owner in refs:
                entry = entries.get(object_id)
                if owner == me:
                    if entry is None:
                        lost.append(object_id)
                    continue
                if entry is None:
                    entry = entries[object_id] = _Entry(False)
                elif entry.ready or entry.fetching or entry.owned:
                    continue
                entry.fetching = True
                fetch.append((object_id, owner))
        return lost, fetch

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
                            waiter.wake()
        for callback in fire:
            callback()

    def reset_pending(self, object_id: str, stored: str) -> bool:
        """Make an owned object whose value was lost (stored as `stored`) pending again, to be
        completed anew (lineage reconstruction); False if it is gone or no longer so stored."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None or not entry.owned or not entry.ready or entry.store_id != stored:
                return False
            entry.data = entry.error = entry.contained = None
            entry.store_id = ""
            self._stored_bytes.pop(object_id, None)
            return True

    def set_origin(self, object_ids: Iterable[str], origin: ErrorOrigin) -> None:
        """Name where an error came from when it is not the call that made these objects."""
        with self._lock:
            for object_id in object_ids:
                entry = self._entries.get(object_id)
                if entry is not None and not entry.ready:
                    entry.origin = origin

    def fail_fetch(self, object_id: str, error: RemoteError) -> None:
        self.complete_many([(object_id, None, error)])

    # -- reading ------------------------------------------------------------------------------
    def has(self, object_id: str) -> bool:
        return object_id in self._entries

    def pending_origin(self, object_id: str) -> ErrorOrigin | None:
        """What makes `object_id`, while it is an owned result not settled yet; else None."""
        entry = self._entries.get(object_id)
        if entry is None or entry.ready or not entry.owned:
            return None
        return entry.origin

    def is_ready(self, object_id: str) -> bool:
        entry = self._entries.get(object_id)
        return entry is not None and entry.ready

    def read(self, object_id: str) -> tuple[bytes | None, RemoteError | None, ErrorOrigin | None]:
        entry = self._entries.get(object_id)
        if entry is None or not entry.ready:
            raise KeyError(object_id)
        return entry.data, entry.error, entry.origin

    def wait(self, object_ids: Sequence[str], num_ready: int, timeout: float | None) -> list[bool]:
        """Block until at least `num_ready` of the ids are ready or the timeout passes.

        Returns readiness per id, up to the first `num_ready` ready ones (see _scan). Unknown ids
        count as never ready.
        """
        with self._lock:
            flags, ready_now = self._scan(object_ids, num_ready)
            if ready_now >= num_ready or (timeout is not None and timeout <= 0):
                return flags
            waiter = ObjectWaiter({i for i, ok in zip(object_ids, flags, strict=True) if not ok}, num_ready - ready_now)
            self._waiters.append(waiter)
        try:
            waiter.block(timeout)
        finally:
            # Also on KeyboardInterrupt: an abandoned waiter would be checked by every completion.
            with self._lock:
                self._waiters.remove(waiter)
        with self._lock:
            return self._scan(object_ids, num_ready)[0]

    def _scan(self, object_ids: Sequence[str], num_ready: int) -> tuple[list[bool], int]:
        """Under the lock: readiness flags, leaving off after the first `num_ready` ready ones
        (the rest flagged not ready: wait() returns only that many), and how many are set.

        wait() in a loop over a long list (Ray's "wait 1k refs") calls this once per ready
        object: stopping early makes that loop linear instead of quadratic."""
        entries = self._entries
        if num_ready >= len(object_ids):
            flags = [(e := entries.get(i)) is not None and (e.data is not None or e.error is not None)
                     for i in object_ids]
            return flags, flags.count(True)
        flags = [False] * len(object_ids)
        found = 0
        for k, object_id in enumerate(object_ids):
            e = entries.get(object_id)
            if e is not None and (e.data is not None or e.error is not None):
                flags[k] = True
                found += 1
                if found >= num_ready:
                    break
        return flags, found

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

    def owned_snapshot(self) -> list[OwnedObject]:
        """The objects this process owns, for `actorhub memory`."""
        with self._lock:
            self._drain_released()
            holders: dict[str, int] = {}
            for entry in self._entries.values():
                for ref in entry.contained or ():
                    holders[ref.hex()] = holders.get(ref.hex(), 0) + 1
            out: list[OwnedObject] = []
            for object_id, e in self._entries.items():
                if not e.owned or is_actor_ref(object_id):
                    continue
                where = "pending" if not e.ready else "error" if e.error is not None else (
                    "store" if e.store_id else "inline")
                size = len(e.data) if e.data is not None and not e.store_id else 0
                out.append(OwnedObject(object_id, size, where, e.refs, dict(e.borrowers or {}), e.escaped,
                                     holders.get(object_id, 0), split_store_id(e.store_id)[0]))
            return out

    def __len__(self) -> int:
        with self._lock:
            self._drain_released()
            return len(self._entries)
