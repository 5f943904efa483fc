"""Borrowers: how an owner learns which other processes hold refs to its objects.

The protocol, in the order a ref travels:

- The process that pickles a ref into a message keeps the ref alive until it knows the
  receiver has told the owner (`capturing_refs` finds the refs; call arguments are held until
  the call's result is settled).
- A callee that unpickles a borrowed ref from a call's arguments registers with the owner only
  if it still holds the ref when the call ends (`register_held`, before the reply is sent):
  most calls hold nothing by then and cost no message.
- A value that goes back to another process (a call's result, a GetObject reply) is sent
  with the refs inside it; the sender registers the receiver as their borrower first (`lend`),
  because the receiver may only unpickle the value much later. The receiver pins them for as
  long as it keeps the value (`accept_lent`).
- When a borrower's last ref goes, its registrations are given back in the background; an
  owner drops the registrations of a borrower process that died.

Registrations are counted, not a set: an add that crosses a remove in flight cannot leave an
object unregistered while it is held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from actorhub.exceptions import RpcFailedError
from actorhub.runtime.actor_refs import is_actor_ref
from actorhub.runtime.object_ref import ObjectRef, adoption_context
from actorhub.wire.worker import LentRef, WorkerClient

if TYPE_CHECKING:
    from actorhub.config import RpcDeadlines
    from actorhub.runtime.object_table import ObjectTable
    from actorhub.wire.transport import ChannelPool

_RELEASE_EVERY_S = 0.1
_PROBE_EVERY_S = 2.0
# A borrower counts as dead after this many probes in a row found nothing listening.
_PROBES_TO_DEATH = 2

# Called with actor pseudo-object ids (runtime/actor_refs.py), on the borrowing thread.
ActorRefsHook = Callable[[list[str]], None]


class Borrowing:
    def __init__(self, objects: ObjectTable, channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        self._objects = objects
        self._channels = channels
        self._deadlines = deadlines
        self._address = address
        self._closed = threading.Event()
        self._missed: dict[str, int] = {}  # borrower -> probes in a row that found it gone
        self._end_actors: ActorRefsHook | None = None
        self._before_actor_release: ActorRefsHook | None = None
        threading.Thread(target=self._loop, name="actorhub-borrows", daemon=True).start()

    def watch_actor_refs(self, end_actors: ActorRefsHook, before_release: ActorRefsHook) -> None:
        """`end_actors`: owned actors nothing references any more. `before_release`: borrowed
        actors whose last handle here went, before the owner is told (so the calls made through
        them are taken in by the actor first, ahead of the owner's end of it)."""
        self._end_actors = end_actors
        self._before_actor_release = before_release

    # -- the receiving side -----------------------------------------------------------------------
    def adopt(self, object_id: str, owner: str) -> ObjectRef[Any]:
        """The ref for an id that arrived inside a message."""
        objects = self._objects
        if owner == self._address:
            objects.adopt(object_id, owner, owned=True)
            return ObjectRef.counted(object_id, owner, objects)
        created = objects.adopt(object_id, owner, owned=False)
        ref = ObjectRef.counted(object_id, owner, objects)
        if created:
            in_call = adoption_context()
            if in_call is not None:
                in_call.append(object_id)
            else:
                # Unpickled outside a call's arguments (user code, a value with no record of
                # its refs): nobody vouches for it, so tell the owner now.
                self.register_held([object_id])
        return ref

    def register_held(self, object_ids: Iterable[str]) -> None:
        """Register this process with the owners of those borrowed ids it still holds."""
        by_owner: dict[str, list[str]] = {}
        for owner, object_id in self._objects.to_register(object_ids):
            by_owner.setdefault(owner, []).append(object_id)
        for owner, ids in by_owner.items():
            self._add_borrowers(owner, self._address, ids)

    def accept_lent(self, object_ids: Sequence[str], contained: Iterable[LentRef]) -> None:
        """Pin refs lent to this process inside values; the values are `object_ids` by index."""
        objects = self._objects
        by_value: dict[int, list[ObjectRef[Any]]] = {}
        for object_id, owner, index in contained:
            objects.adopt(object_id, owner, owned=owner == self._address, lent=True)
            by_value.setdefault(index, []).append(ObjectRef.counted(object_id, owner, objects))
        for index, refs in by_value.items():
            if index < len(object_ids):
                objects.attach_contained(object_ids[index], refs)

    # -- the sending side -------------------------------------------------------------------------
    def lend(self, refs: Iterable[tuple[int, ObjectRef[Any]]], borrower: str) -> list[LentRef]:
        """Register `borrower` for each ref before a value holding them is sent to it; returns
        what the message carries to say so (the sender writes them into its reply)."""
        out: list[LentRef] = []
        remote: dict[str, list[str]] = {}
        for index, ref in refs:
            owner = ref.owner_address
            out.append(LentRef(ref.hex(), owner, index))
            if owner == borrower or not borrower:
                continue  # an owner holds its own objects without registering
            if owner == self._address:
                self._objects.add_borrower(ref.hex(), borrower)
            else:
                remote.setdefault(owner, []).append(ref.hex())
        for owner, ids in remote.items():
            self._add_borrowers(owner, borrower, ids)
        return out

    def _add_borrowers(self, owner: str, borrower: str, ids: list[str]) -> None:
        try:
            self._client(owner, "owner").add_borrowers(borrower, ids)
        except RpcFailedError:
            pass  # the owner is gone, and its objects with it: reads report OwnerDiedError

    # -- background: give registrations back, drop dead borrowers ---------------------------------------
    def _loop(self) -> None:
        next_probe = time.monotonic() + _PROBE_EVERY_S
        while not self._closed.wait(_RELEASE_EVERY_S):
            self.flush()
            if time.monotonic() >= next_probe:
                self._probe_borrowers()
                next_probe = time.monotonic() + _PROBE_EVERY_S

    def flush(self) -> None:
        if self._end_actors is not None and not self._closed.is_set():
            # Closing: the job's (or owner's) end ends them instead.
            unreferenced = self._objects.take_unreferenced_actors()
            if unreferenced:
                self._end_actors(unreferenced)
        releases = self._objects.take_releases()
        if not releases:
            return
        if self._before_actor_release is not None:
            actor_ids = [object_id for _, object_id, _ in releases if is_actor_ref(object_id)]
            if actor_ids:
                self._before_actor_release(actor_ids)
        by_owner: dict[str, tuple[list[str], list[int]]] = {}
        for owner, object_id, count in releases:
            ids, counts = by_owner.setdefault(owner, ([], []))
            ids.append(object_id)
            counts.append(count)
        for owner, (ids, counts) in by_owner.items():
            try:
                self._client(owner, "owner").remove_borrowers(self._address, ids, counts)
            except RpcFailedError:
                pass  # the owner is gone: nothing left to give back

    def _probe_borrowers(self) -> None:
        borrowers = self._objects.borrower_addresses()
        for borrower in list(self._missed):
            if borrower not in borrowers:
                del self._missed[borrower]
        for borrower in borrowers:
            if not self._client(borrower, "borrower").refuses():
                self._missed.pop(borrower, None)
                continue
            self._missed[borrower] = self._missed.get(borrower, 0) + 1
            if self._missed[borrower] >= _PROBES_TO_DEATH:
                del self._missed[borrower]
                self._objects.forget_borrower(borrower)
                self._channels.discard(borrower)

    def _client(self, address: str, role: str) -> WorkerClient:
        return WorkerClient(self._channels, address, self._deadlines, role)

    # -- the owner's service ------------------------------------------------------------------------------
    def add_borrowers(self, borrower: str, object_ids: Iterable[str]) -> None:
        for object_id in object_ids:
            self._objects.add_borrower(object_id, borrower)

    def remove_borrowers(self, borrower: str, object_ids: Iterable[str], counts: Iterable[int]) -> None:
        """`counts`: registrations to drop, per id."""
        for object_id, count in zip(object_ids, counts, strict=False):
            self._objects.remove_borrower(object_id, borrower, count)

    def close(self) -> None:
        """Give back what this process still borrows (it is leaving), then stop."""
        self._closed.set()
        self.flush()
