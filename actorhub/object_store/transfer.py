"""Objects in chunks: a node serves its stored objects in chunks and pulls other nodes'.

A reader whose object sits in another node's store asks its own node to pull it. That node
streams the segment from the source node (`ReadObject`) into a region of its own arena, under
the same id and owner, and seals it; the reader then maps it like any object of its node
(zero-copy, read-only). Bytes go from arena to arena: no process deserializes them on the way,
and no message is bigger than a chunk, so an object may be larger than protobuf's 2 GiB.

A process whose node's arena it cannot see (another host) moves objects the same way: it
writes a value to its node in chunks (`Incoming`, as a pull does) and reads one from the node
that holds it into its own memory (`serve` with `copy=False`); see client.py and remote.py.

Copies are freed from two sides: the source remembers which nodes pulled an object and tells
them when it deletes it (its owner freed it), and a copy node's own owner sweep frees the
copies of an owner that died (the source may have died with it).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Generator, Iterable

import grpc

from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.object_store.store import SHARED_MEMORY, Location, NodeObjectStore, ObjectExistsError
from actorhub.wire.store import NodeStoreClient
from actorhub.wire.transport import ChannelPool

# Big enough that per-message costs vanish against the copy, small enough that a chunk in
# flight on either side is no burden (gRPC holds a few per stream).
CHUNK_BYTES = 8 << 20

# One chunk of a segment as `serve` yields it: (the whole segment's size, this chunk's offset
# in it, its bytes). The store's service writes each into an ObjectChunk message.
Chunk = tuple[int, int, bytes]


class PullError(Exception):
    """A pull failed; `code` says how (NOT_FOUND: the source no longer has it)."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class ObjectTransfer:
    def __init__(self, store: NodeObjectStore, channels: ChannelPool, deadlines: RpcDeadlines | None = None) -> None:
        self._store = store
        self._channels = channels
        self._deadlines = deadlines or RpcDeadlines()
        self._lock = threading.Lock()
        self._copies: dict[str, set[str]] = {}  # object id -> nodes that pulled it from here
        # Deletes of copies go out in the background: the owner freeing an object does not
        # wait for every node that holds a copy.
        self._forwarder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="actorhub-copy-free")
        self.address = ""  # this node agent's, once it serves

    # -- the source's side ----------------------------------------------------------------------
    def serve(self, object_id: str, puller: str, *, copy: bool = True) -> Generator[Chunk, None, None]:
        """The segment of `object_id` in chunks; pinned (so not reused) until the last is sent.

        `copy`: the puller is a node that keeps a copy, deleted when this node deletes the
        object; else a process reading it into its own memory, which leaves nothing behind.
        """
        location, fd = self._open(object_id, puller)
        if copy:
            with self._lock:
                self._copies.setdefault(object_id, set()).add(puller)
        try:
            size, sent = location.size, 0
            while sent < size:
                data = os.pread(fd, min(CHUNK_BYTES, size - sent), location.offset + sent)
                if not data:
                    raise OSError(f"object {object_id} ended after {sent} of {size} bytes")
                yield size, sent, data
                sent += len(data)
        finally:
            os.close(fd)
            if location.where == SHARED_MEMORY:
                self._store.release(object_id, location.offset, puller)

    def _open(self, object_id: str, puller: str) -> tuple[Location, int]:
        for _ in range(8):
            location = self._store.open(object_id, puller)  # restores it first if spilled
            try:
                return location, os.open(location.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # a spill file restored or freed meanwhile: ask again
            except BaseException:
                if location.where == SHARED_MEMORY:
                    self._store.release(object_id, location.offset, puller)
                raise
        raise OSError(f"object {object_id} kept moving while being opened")

    def forget(self, object_ids: Iterable[str]) -> None:
        """`object_ids` left this node's store: delete the copies other nodes pulled."""
        by_node: dict[str, list[str]] = {}
        with self._lock:
            for object_id in object_ids:
                for node in self._copies.pop(object_id, ()):
                    by_node.setdefault(node, []).append(object_id)
        for node, ids in by_node.items():
            self._forwarder.submit(self._delete_copies, node, ids)

    def _delete_copies(self, node: str, object_ids: list[str]) -> None:
        try:
            NodeStoreClient(self._channels, node, self._deadlines).delete(object_ids)
        except RpcFailedError:
            pass  # that node is gone, and its copies with it

    # -- the puller's side ----------------------------------------------------------------------
    def pull(self, object_id: str, source: str, owner: str) -> None:
        """Copy `object_id` from the store of the node at `source` into this node's, sealed.

        Returns at once when the object is here already or another pull of it is under way
        (readers' `open` waits for that one's seal).
        """
        if object_id in self._store:
            return
        chunks = NodeStoreClient(self._channels, source, self._deadlines).read(object_id, self.address)
        incoming: Incoming | None = None
        try:
            for chunk in chunks:
                if incoming is None:
                    try:
                        incoming = Incoming(self._store, object_id, chunk.total_size, owner, is_copy=True)
                    except ObjectExistsError:
                        chunks.cancel()
                        return
                incoming.write(chunk.offset, chunk.data)
            if incoming is None:
                raise BadChunkError(f"object {object_id} ended after 0 bytes")
            incoming.finish()
        except BadChunkError as e:
            raise PullError(f"object {object_id} from node {source}: {e}", grpc.StatusCode.DATA_LOSS) from None
        except RpcFailedError as e:
            code = e.code if e.code is not None else grpc.StatusCode.UNKNOWN
            raise PullError(f"cannot pull object {object_id} from node {source}: {e.details}", code) from None
        finally:
            if incoming is not None:
                incoming.abandon()  # nothing once it is sealed

    def close(self) -> None:
        self._forwarder.shutdown(wait=False, cancel_futures=True)


class BadChunkError(ValueError):
    """A chunk out of order or past the object's end, or a stream that ended short of it."""


class Incoming:
    """An object arriving in chunks, in order: a pull from another node, or a put from a process
    whose node's arena is not visible to it (WriteObject).

    Reserved when made (ObjectExistsError if the id is taken), each chunk written at its place,
    sealed by `finish` once all of it came; `abandon` (the stream broke) deletes it. A write and
    an abandon take turns under a lock: a region is never given back while a chunk is still
    being written into it, which would corrupt whatever object is given the region next.
    """

    def __init__(self, store: NodeObjectStore, object_id: str, size: int, owner: str, *, is_copy: bool = False) -> None:
        self._store = store
        self.object_id = object_id
        self.size = size
        self._lock = threading.Lock()
        self._received = 0
        self._done = False
        location = store.reserve(object_id, size, owner, is_copy=is_copy)
        self._offset = location.offset
        try:
            # An arena region, or a file of its own for an object bigger than the arena.
            flags = os.O_RDWR | os.O_CLOEXEC | (0 if location.where == SHARED_MEMORY else os.O_CREAT)
            self._fd = os.open(location.path, flags, 0o600)
        except BaseException:
            store.delete(object_id)
            raise

    def write(self, offset: int, data: bytes) -> None:
        with self._lock:
            if self._done:
                raise BadChunkError(f"object {self.object_id} is no longer being written")
            if offset != self._received or offset + len(data) > self.size:
                raise BadChunkError(
                    f"object {self.object_id}: a chunk of {len(data)} bytes at offset {offset}, where "
                    f"{self._received} of {self.size} bytes came so far"
                )
            _write_all(self._fd, data, self._offset + offset)
            self._received += len(data)

    def finish(self) -> Location:
        """Seal the object once every byte came (BadChunkError if not; it is left to abandon)."""
        with self._lock:
            if self._done:
                raise BadChunkError(f"object {self.object_id} is no longer being written")
            if self._received != self.size:
                raise BadChunkError(f"object {self.object_id} ended after {self._received} of {self.size} bytes")
            self._done = True
            os.close(self._fd)
        try:
            return self._store.seal(self.object_id)
        except BaseException:
            self._store.delete(self.object_id)
            raise

    def abandon(self) -> None:
        """Delete the object unless it was sealed; waits for a write under way."""
        with self._lock:
            if self._done:
                return
            self._done = True
            os.close(self._fd)
        self._store.delete(self.object_id)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
