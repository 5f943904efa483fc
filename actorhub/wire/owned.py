"""The objects a process owns, as its Worker service lists them (ListOwnedObjects).

What `actorhub memory` shows of each owner. Apart from `wire/worker.py`'s WorkerClient so that
the listing's record and its conversion stay in one place; the client answers the raw reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorhub._proto.v1 import worker_pb2
from actorhub.config import RpcDeadlines
from actorhub.wire.transport import ChannelPool
from actorhub.wire.worker import WorkerClient


@dataclass(frozen=True)
class OwnedObject:
    object_id: str
    size: int
    """Serialized bytes of an inline value; 0 when the value is in a node's store."""
    where: str
    """"inline", "shared memory" (the store's own detail), "pending" or "error"."""
    local_refs: int
    borrowers: dict[str, int]
    """Borrower address -> the refs it holds."""
    escaped: bool
    """Pickled outside a call: kept while the owner lives."""
    contained_in: int
    """Values of the owner that hold a ref to it."""
    store_id: str
    """Its id in node stores, when it is in one."""


def list_owned_objects(channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> list[OwnedObject]:
    """The objects the process at `address` owns. A failure raises RpcFailedError."""
    reply = WorkerClient(channels, address, deadlines, "owner").list_owned_objects()
    return [_owned(o) for o in reply.objects]


def _owned(o: worker_pb2.OwnedObject) -> OwnedObject:
    return OwnedObject(
        object_id=o.object_id,
        size=o.size,
        where=o.where,
        local_refs=o.local_refs,
        borrowers=dict(o.borrowers),
        escaped=o.escaped,
        contained_in=o.contained_in,
        store_id=o.store_id,
    )
