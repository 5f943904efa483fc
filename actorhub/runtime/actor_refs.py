"""Actor handles as references: an actor that is not detached lives while a handle to it does.

Each such actor is a pseudo-object, `actor:<actor_id>`, owned by the process that created it
and counted by the object machinery that counts ObjectRefs (object_table.py, borrowing.py):
a strong handle holds one ObjectRef to it. So a handle pickled into a call's arguments, a result
or a stored value makes its receiver a borrower exactly as a ref inside it would, a borrower
that dies is dropped by the owner's probes, and a handle pickled where nobody can follow (user
code) keeps its actor while the owner lives. Handles count, calls do not: making a call touches
no counter.

When the owner's entry goes (no handle here, no borrower anywhere), the owner sends the actor
a last call on its own connection, after the calls it queued there: the actor runs what was
queued, then its cleanup hooks (`__ray_shutdown__`, atexit), and ends for good.

Weak handles count nothing, as in Ray: handles of detached actors, those `get_actor` (or
`get_if_exists` finding an existing actor) returns, `current_actor`; a weak handle pickles to
a weak handle.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from actorhub.runtime.object_ref import ObjectRef, RefCounts

log = logging.getLogger(__name__)

ACTOR_REF_PREFIX = "actor:"
# The call an owner sends to end an actor that nothing references any more. Not a method of
# any handle: only the owner's runtime sends it.
OUT_OF_SCOPE_METHOD = "__actorhub_out_of_scope__"
# Its death cause, after "The actor <label> " (Ray's words).
OUT_OF_SCOPE_REASON = "is dead because all references to the actor were removed"


def actor_ref_id(actor_id: str) -> str:
    return ACTOR_REF_PREFIX + actor_id


def is_actor_ref(object_id: str) -> bool:
    return object_id.startswith(ACTOR_REF_PREFIX)


def actor_id_of(object_id: str) -> str:
    return object_id[len(ACTOR_REF_PREFIX):]


class ActorRefTable(RefCounts, Protocol):
    """What the owner's side needs of its object table (object_table.py, which imports this
    module: a Protocol keeps the two out of each other's imports)."""

    def own_actor_ref(self, object_id: str) -> None: ...


# What ending an actor takes: its id and class name (the connection's, for messages).
EndActor = Callable[[str, str], None]


class OwnedActors:
    """The owner's side: the actors this process created that end once unreferenced."""

    def __init__(self, objects: ActorRefTable, address: str, end: EndActor) -> None:
        self._objects = objects
        self._address = address
        self._end = end
        self._lock = threading.Lock()
        self._class_names: dict[str, str] = {}  # actor id -> class name, while it may still end here
        # Ends are carried out on a thread of their own: one may wait for the hub (away, or
        # restarting), and the borrowing thread that finds them must keep releasing meanwhile.
        self._ends: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._ender: threading.Thread | None = None

    def own(self, actor_id: str, class_name: str) -> ObjectRef[Any]:
        """The reference a new strong handle holds (the first one, made at creation)."""
        object_id = actor_ref_id(actor_id)
        with self._lock:
            self._class_names[actor_id] = class_name
        self._objects.own_actor_ref(object_id)
        return ObjectRef(object_id, self._address, self._objects)

    def forget(self, actor_id: str) -> None:
        """The actor was killed through this process: nothing is left to end when unreferenced."""
        with self._lock:
            self._class_names.pop(actor_id, None)

    def end_unreferenced(self, object_ids: Iterable[str]) -> None:
        """Called off the call path (the borrowing thread) with the pseudo-objects that went."""
        for object_id in object_ids:
            actor_id = actor_id_of(object_id)
            with self._lock:
                class_name = self._class_names.pop(actor_id, None)
                if class_name is None:
                    continue
                self._ends.put((actor_id, class_name))
                if self._ender is None:
                    self._ender = threading.Thread(target=self._end_in_turn, name="actorhub-actor-ends", daemon=True)
                    self._ender.start()

    def _end_in_turn(self) -> None:
        while True:
            actor_id, class_name = self._ends.get()
            try:
                self._end(actor_id, class_name)
            except Exception:  # the actor, or the hub, is gone: nothing is left to end
                log.warning("could not end the unreferenced actor %s", actor_id, exc_info=True)

    def __len__(self) -> int:
        return len(self._class_names)
