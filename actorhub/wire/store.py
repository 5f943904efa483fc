"""The client of a node's object store RPCs: reserve, seal, open, release, delete, list, pull, read,
and describe and write for processes that cannot map the node's arena.

Values travel here only as chunks of segments: between nodes, and to and from a process whose
node's arena is not visible to it (another host). Otherwise only where they are (an arena
region or a file) crosses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.wire.rpc import Client, Peer, ServerStream, unary
from actorhub.wire.transport import ChannelPool


@dataclass(frozen=True)
class StoreLocation:
    """Where an object's segment is: a region of the node's arena, or a file of its own."""

    path: str
    offset: int
    length: int
    arena: bool


@dataclass(frozen=True)
class StoredObject:
    object_id: str
    size: int
    owner: str
    where: str
    """"shared memory" or "spilled"."""
    is_copy: bool = False
    """Pulled from another node's store: a cache, not this node's own."""


@dataclass(frozen=True)
class StoreListing:
    objects: tuple[StoredObject, ...]
    capacity: int
    used: int
    """Of the arena, in whole pages; regions readers still map included."""
    spilled: int
    """Bytes on disk."""


@dataclass(frozen=True)
class StoreInfo:
    """The node's arena, and the id written beside it (a process that reads the same id there
    maps the arena; else it streams objects)."""

    arena_path: str
    arena_id: str


def _location(reply: node_pb2.ObjectLocation) -> StoreLocation:
    return StoreLocation(path=reply.path, offset=reply.offset, length=reply.length, arena=reply.arena)


class NodeStoreClient(Client[node_pb2_grpc.NodeStub]):
    """One node's store. Failures raise RpcFailedError; the caller decides what a miss means."""

    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        super().__init__(channels, Peer("node", address), deadlines, node_pb2_grpc.NodeStub)

    def reserve(
        self, object_id: str, size: int, owner: str, delete_first: list[str], writer: str
    ) -> StoreLocation:
        """Not retried: a reserve that reached the store holds the id, a second finds it taken."""
        request = node_pb2.ReserveObjectRequest(
            object_id=object_id, size=size, owner=owner, delete_first=delete_first, writer=writer
        )
        reply = unary(self.peer, "ReserveObject", self._stub().ReserveObject, request, self.deadlines.store_s)
        return _location(reply)

    def seal(self, object_id: str, reader: str = "") -> StoreLocation:
        """With `reader`, the store also pins the region for it, as `open` does (release it so)."""
        request = node_pb2.ObjectIdRequest(object_id=object_id, reader=reader)
        reply = unary(self.peer, "SealObject", self._stub().SealObject, request, self.deadlines.store_s)
        return _location(reply)

    def open(self, object_id: str, reader: str) -> StoreLocation:
        """Pins the object's region for `reader`; NOT_FOUND when the store does not have it."""
        request = node_pb2.OpenObjectRequest(object_id=object_id, reader=reader)
        reply = unary(self.peer, "OpenObject", self._stub().OpenObject, request, self.deadlines.fetch_s)
        return _location(reply)

    def release(self, reader: str, pins: Iterable[tuple[str, int]]) -> None:
        """Give back `reader`'s pins, each (object id, region offset); one entry per pin."""
        request = node_pb2.ReleaseObjectsRequest(
            reader=reader, pins=[node_pb2.ObjectPin(object_id=i, offset=offset) for i, offset in pins]
        )
        unary(self.peer, "ReleaseObjects", self._stub().ReleaseObjects, request, self.deadlines.store_s)

    def delete(self, object_ids: list[str]) -> None:
        # Idempotent (deleting what is gone does nothing), so a reconnecting channel is retried.
        request = node_pb2.DeleteObjectsRequest(object_ids=object_ids)
        unary(
            self.peer, "DeleteObjects", self._stub().DeleteObjects, request, self.deadlines.store_s,
            retry_unavailable_s=self._retry_s,
        )

    def list(self) -> StoreListing:
        reply: node_pb2.ListObjectsReply = unary(
            self.peer, "ListObjects", self._stub().ListObjects, common_pb2.Empty(), self.deadlines.store_s,
            retry_unavailable_s=self._retry_s,
        )
        return StoreListing(
            objects=tuple(StoredObject(o.object_id, o.size, o.owner, o.where, o.is_copy) for o in reply.objects),
            capacity=reply.capacity, used=reply.used, spilled=reply.spilled,
        )

    def pull(self, object_id: str, source: str, owner: str) -> None:
        """Have this node copy `object_id` from the node at `source` (concurrent pulls make one
        copy, so a retry is harmless)."""
        request = node_pb2.PullObjectRequest(object_id=object_id, source=source, owner=owner)
        unary(
            self.peer, "PullObject", self._stub().PullObject, request, self.deadlines.fetch_s,
            retry_unavailable_s=self._retry_s,
        )

    def read(self, object_id: str, puller: str, into_process: bool = False) -> ServerStream[node_pb2.ObjectChunk]:
        """Stream the object's segment in chunks: node to node (the puller keeps a copy, which
        this node deletes with the object), or `into_process` (the reader keeps nothing)."""
        request = node_pb2.ReadObjectRequest(object_id=object_id, puller=puller, into_process=into_process)
        timeout = self.deadlines.fetch_s
        call = self._stub().ReadObject(request, timeout=timeout)
        return ServerStream(self.peer, "ReadObject", call, timeout)

    def describe(self) -> StoreInfo:
        reply: node_pb2.StoreInfo = unary(
            self.peer, "DescribeStore", self._stub().DescribeStore, common_pb2.Empty(), self.deadlines.store_s,
            retry_unavailable_s=self._retry_s,
        )
        return StoreInfo(arena_path=reply.arena_path, arena_id=reply.arena_id)

    def write(
        self, object_id: str, size: int, owner: str, delete_first: Iterable[str], writer: str,
        chunks: Iterable[tuple[int, bytes]],
    ) -> StoreLocation:
        """Store a segment of `size` bytes sent as (offset, bytes) chunks, in order; sealed when
        this returns. Not retried: the chunks are consumed, and a stream that broke left nothing."""
        reserve = node_pb2.ReserveObjectRequest(
            object_id=object_id, size=size, owner=owner, delete_first=delete_first, writer=writer
        )

        def messages() -> Iterator[node_pb2.ObjectWrite]:
            first = True
            for offset, data in chunks:
                yield node_pb2.ObjectWrite(reserve=reserve if first else None, offset=offset, data=data)
                first = False

        reply = unary(self.peer, "WriteObject", self._stub().WriteObject, messages(), self.deadlines.fetch_s)
        return _location(reply)
