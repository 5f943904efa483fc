"""A process's client of its node's object store: large values go to shared memory.

`put` of a value whose serialized form is 100 KiB or more writes it, with its out-of-band
buffers, into a segment the node's store made room for; the owner keeps only a marker. A
reader on the same node maps the segment: a numpy array comes back without a copy, read-only.
Freed objects are deleted from the store in batches, off the caller's thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from actorhub.tasks import _shm

from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.exceptions import ObjectLostError

if TYPE_CHECKING:
    from actorhub._runtime import Runtime

INLINE_LIMIT = 100 * 1024
_FLUSH_S = 0.2


class StoreClient:
    def __init__(self, runtime: Runtime, node_address: str) -> None:
        self._rt = runtime
        self._node = node_pb2_grpc.NodeStub(runtime.channels.get(node_address))
        self._paths: dict[str, Path] = {}
        self._closed = threading.Event()
        threading.Thread(target=self._free_loop, name="actorhub-store-free", daemon=True).start()

    def put(self, object_id: str, value: Any, owner: str = "") -> _shm.Serialized | None:
        """Store `value` if it is large; else return its serialized form for inline keeping.

        `owner` is whoever frees it (a call's caller, for a result); this process by default.
        """
        serialized = _shm.serialize(value)
        if serialized.total_size < INLINE_LIMIT:
            return serialized
        location = self._node.ReserveObject(
            node_pb2.ReserveObjectRequest(
                object_id=object_id, size=serialized.total_size, owner=owner or self._rt.address
            )
        )
        _shm.write_segment(Path(location.path), serialized)
        sealed = self._node.SealObject(node_pb2.ObjectIdRequest(object_id=object_id))
        self._paths[object_id] = Path(sealed.path)
        return None

    def read(self, object_id: str) -> Any:
        path = self._paths.get(object_id)
        if path is not None:
            try:
                return _shm.read_segment(path)
            except FileNotFoundError:
                pass  # spilled since: the store restores it on open
        try:
            location = self._node.OpenObject(node_pb2.ObjectIdRequest(object_id=object_id))
        except grpc.RpcError as e:
            raise ObjectLostError(
                f"object {object_id} is not in this node's store ({e.code().name}: {e.details()})",
                object_id=object_id,
            ) from None
        path = self._paths[object_id] = Path(location.path)
        return _shm.read_segment(path)

    def _free_loop(self) -> None:
        while not self._closed.wait(_FLUSH_S):
            self.flush()

    def flush(self) -> None:
        freed = self._rt.objects.collect_freed_stored()
        if not freed:
            return
        for object_id in freed:
            self._paths.pop(object_id, None)
        try:
            self._node.DeleteObjects(node_pb2.DeleteObjectsRequest(object_ids=freed), timeout=10)
        except grpc.RpcError:
            pass  # the node is gone, and its store with it

    def list(self) -> node_pb2.ListObjectsReply:
        reply: node_pb2.ListObjectsReply = self._node.ListObjects(common_pb2.Empty(), timeout=10)
        return reply

    def close(self) -> None:
        self._closed.set()
        self.flush()
