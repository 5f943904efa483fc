"""A process's client of its node's object store: large values go to shared memory.

`put` of a value whose serialized form is 100 KiB or more writes it, with its out-of-band
buffers, into a region of the node's arena the store reserved; the owner keeps only a marker.
A reader on the same node maps the region: a numpy array comes back without a copy, read-only.
Opening an object pins its region at the store, so it is not reused under the reader's arrays.
The pin is kept while any mapping of it lives here and one flush period more, so a value read
again and again costs one OpenObject, not one per read; then it is released. Deletes of freed
objects and pin releases go to the store in batches, off the caller's thread.

A process that reads back what it put (`x = get(put(v))`) would pay an OpenObject per object,
an RPC that costs more than the rest of a get. Once a read of one of its own puts had to open
it, each later put asks the seal to pin the region for this process too, so a get of it makes
no RPC. The first such pin freed (or idle) unread stops this until a read needs an open again:
processes that do not read their own puts (producers, staged call arguments, put-and-drop
loops) are not pinned.

A process that cannot see its node's arena (a driver on another host) learns so at its first
put or read, and from then on streams values to and from the nodes' stores (remote.py): no
mapping, pins or pulls. Everything else here (ids, owners, frees) is the same.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from actorhub.exceptions import ObjectLostError, RpcDeadlineExceededError, RpcFailedError
from actorhub.object_store import shm as _shm
from actorhub.runtime.ids import split_store_id
from actorhub.wire.rpc import NOT_FOUND
from actorhub.wire.store import NodeStoreClient, StoreListing, StoreLocation

if TYPE_CHECKING:
    from actorhub.config import RpcDeadlines
    from actorhub.runtime.object_table import ObjectTable
    from actorhub.wire.transport import ChannelPool

INLINE_LIMIT = 100 * 1024
_FLUSH_S = 0.2

log = logging.getLogger(__name__)


class _Pin:
    """One pin this process holds on a region: where it is and how many mappings use it."""

    __slots__ = ("cached", "idle", "location", "mappings", "object_id", "unread")

    def __init__(self, object_id: str, location: StoreLocation, mappings: int = 1, unread: bool = False) -> None:
        self.object_id = object_id
        self.location = location
        self.mappings = mappings
        self.cached = False  # the pin reads of this object reuse; else released when unmapped
        self.idle = False  # unmapped at the last flush: released at the next if still so
        self.unread = unread  # taken by a seal, and no read has used it yet


class StoreHost(Protocol):
    """What the client needs of its process's runtime (which makes it: a Protocol, not an import)."""

    address: str
    channels: ChannelPool
    deadlines: RpcDeadlines
    objects: ObjectTable


class StoreClient:
    def __init__(self, runtime: StoreHost, node_address: str) -> None:
        self._rt = runtime
        self._node_address = node_address
        self._node = NodeStoreClient(runtime.channels, node_address, runtime.deadlines)
        self._elsewhere: dict[str, list[str]] = {}  # node address -> freed ids in its store
        self._arena: _shm.Arena | None = None
        self._lock = threading.Lock()
        self._pins: dict[str, _Pin] = {}
        # Mappings that are gone. Appended by finalizers, which may run inside any locked
        # section of the thread that collects, so they never take the lock themselves.
        self._unmapped: collections.deque[_Pin] = collections.deque()
        self._releasing: list[_Pin] = []
        # Set once a read of an object this process put had to open it: from then on its
        # seals pin (see the module's docstring).
        self._open_ahead = False
        self._remote: bool | None = None  # decided at the first put or read (see `remote`)
        self._closed = threading.Event()
        threading.Thread(target=self._free_loop, name="actorhub-store-free", daemon=True).start()

    def put(self, object_id: str, value: Any, owner: str = "") -> _shm.Serialized | int:
        """Store `value` if it is large and return the bytes it takes there (its owner weighs
        DEFAULT task placement by them); else return its serialized form for inline keeping.

        `owner` is whoever frees it (a call's caller, for a result); this process by default.
        """
        serialized = _shm.serialize(value)
        if serialized.total_size < INLINE_LIMIT:
            return serialized
        if self.remote:
            from actorhub.object_store import remote as _remote

            writer = self._rt.address if owner and owner != self._rt.address else ""
            _remote.write(self._node, object_id, serialized, owner or self._rt.address, self._take_freed(), writer)
            return serialized.total_size
        location = self._node.reserve(
            object_id,
            serialized.total_size,
            owner=owner or self._rt.address,
            delete_first=self._take_freed(),
            writer=self._rt.address if owner and owner != self._rt.address else "",
        )
        try:
            if location.arena:
                self._arena_at(location.path).write(location.offset, serialized)
            else:  # too big for the arena: a file of its own
                _shm.write_segment(Path(location.path), serialized)
        except BaseException:
            # Nobody else can have it yet: give the room back at once.
            self._send(partial(self._node.delete, [object_id]), [object_id])
            raise
        pin_here = self._open_ahead and location.arena and not owner
        sealed = self._node.seal(object_id, self._rt.address if pin_here else "")
        if pin_here and sealed.arena:
            pin = _Pin(object_id, sealed, mappings=0, unread=True)  # the seal pinned it for us
            with self._lock:
                pin.cached = True
                self._pins[object_id] = pin
        return serialized.total_size

    @property
    def remote(self) -> bool:
        """Whether this process cannot map its node's arena (another host, another /dev/shm),
        so streams objects; asked of the node once, at the first put or read."""
        remote = self._remote
        if remote is None:
            from actorhub.object_store import remote as _remote

            info = self._node.describe()
            remote = not _remote.arena_visible(info)
            with self._lock:
                if self._remote is None:
                    self._remote = remote
                    if remote:
                        log.info(
                            "the object store of node %s (%s) is not visible here: objects are streamed to "
                            "and from it", self._node_address, info.arena_path,
                        )
        return remote

    def pull(self, object_id: str, source: str, owner: str) -> None:
        """Have this node copy `object_id` from the store of the node at `source` (once).

        Not in remote mode: a read there streams from `source` itself, a copy at this node
        would only be read over the network again.
        """
        if self._remote_or_lost(object_id):
            return
        try:
            self._node.pull(object_id, source, owner)
        except RpcFailedError as e:
            code = e.code.name if e.code is not None else "UNKNOWN"
            raise ObjectLostError(
                f"object {object_id} could not be brought from node {source} ({code}: {e.details})",
                object_id=object_id,
            ) from None

    def read(self, object_id: str, pull_from: str = "") -> Any:
        """Map the object from this node's store; `pull_from`, another node's address, is where
        to copy it from when it is not here (never pulled, or a copy dropped since). In remote
        mode, stream it from `pull_from` (or this node) instead."""
        with self._lock:
            self._drain_unmapped()
            pin = self._pins.get(object_id)
            if pin is not None:
                pin.mappings += 1
                pin.idle = pin.unread = False
        if pin is not None:
            return self._map(pin)
        if self._remote_or_lost(object_id):
            return self._read_remote(object_id, pull_from or self._node_address)
        if not self._open_ahead and self._rt.objects.is_own_put(object_id):
            self._open_ahead = True  # this process reads what it puts (again)
        can_pull = bool(pull_from) and pull_from != self._node_address
        for _ in range(8):
            try:
                location = self._node.open(object_id, self._rt.address)
            except RpcFailedError as e:
                if can_pull and e.code == NOT_FOUND:
                    self.pull(object_id, pull_from, self._rt.address)
                    can_pull = False  # once: a second miss is a loss
                    continue
                if isinstance(e, RpcDeadlineExceededError):
                    raise  # the node is there but did not answer (stopped, hung): not a loss
                code = e.code.name if e.code is not None else "UNKNOWN"
                raise ObjectLostError(
                    f"object {object_id} is not in this node's store ({code}: {e.details})",
                    object_id=object_id,
                ) from None
            if location.arena:
                pin = _Pin(object_id, location)
                with self._lock:
                    if object_id not in self._pins:  # else a concurrent read cached one first
                        self._pins[object_id] = pin
                        pin.cached = True
                return self._map(pin)
            try:
                return _shm.read_segment(Path(location.path))
            except FileNotFoundError:
                continue  # a spill file restored or freed between open and mapping: ask again
        raise ObjectLostError(f"object {object_id} kept moving while being read", object_id=object_id)

    def _remote_or_lost(self, object_id: str) -> bool:
        """`remote`, for a read: a node that cannot say loses the object (a stopped one that
        does not answer in time raises RpcDeadlineExceededError: that is no loss)."""
        try:
            return self.remote
        except RpcDeadlineExceededError:
            raise
        except RpcFailedError as e:
            raise _lost(object_id, f"its node {self._node_address} did not answer", e) from None

    def _read_remote(self, object_id: str, source: str) -> Any:
        """Stream the object from the store of the node at `source` into this process."""
        from actorhub.object_store import remote as _remote

        node = self._node if source == self._node_address else NodeStoreClient(
            self._rt.channels, source, self._rt.deadlines
        )
        try:
            return _remote.read(node, object_id, self._rt.address)
        except RpcDeadlineExceededError:
            raise  # the node is there but did not answer in time (stopped, hung): not a loss
        except RpcFailedError as e:
            raise _lost(object_id, f"it could not be read from node {source}", e) from None
        except _remote.ChunkStreamError as e:
            raise ObjectLostError(str(e), object_id=object_id) from None

    def _map(self, pin: _Pin) -> Any:
        done = False

        def unmapped() -> None:
            nonlocal done
            if not done:
                done = True
                self._unmapped.append(pin)

        location = pin.location
        try:
            return self._arena_at(location.path).read_shared(location.offset, location.length, unmapped)
        except BaseException:
            unmapped()  # whatever was built on the mapping is garbage now
            raise

    def _arena_at(self, path: str) -> _shm.Arena:
        """The node's arena, opened once per process (one node, so one arena)."""
        arena = self._arena
        if arena is None or str(arena.path) != path:
            with self._lock:
                arena = self._arena
                if arena is None or str(arena.path) != path:
                    arena = self._arena = _shm.Arena.open(Path(path))
        return arena

    def _drain_unmapped(self) -> None:
        while self._unmapped:
            pin = self._unmapped.popleft()
            pin.mappings -= 1
            if not pin.mappings and not pin.cached:
                self._releasing.append(pin)

    def _free_loop(self) -> None:
        while not self._closed.wait(_FLUSH_S):
            try:
                self.flush()
            except ValueError:  # gRPC's "closed channel": the runtime closed while this flush ran
                if self._closed.is_set():
                    return
                raise

    def _take_freed(self) -> list[str]:
        """This process's stored objects whose last ref is gone, to delete from this node's
        store now; those in other nodes' stores wait for the next flush, which sends them there
        (their stores delete the copies pulled here too)."""
        recorded = self._rt.objects.collect_freed_stored()
        freed: list[str] = []
        if recorded:
            with self._lock:
                for entry in recorded:
                    object_id, node_address = split_store_id(entry)
                    self._uncache(self._pins.get(object_id))
                    if node_address and node_address != self._node_address:
                        self._elsewhere.setdefault(node_address, []).append(object_id)
                    else:
                        freed.append(object_id)
        return freed

    def flush(self, *, release_all: bool = False) -> None:
        freed = self._take_freed()
        with self._lock:
            self._drain_unmapped()
            for pin in list(self._pins.values()):
                if not pin.mappings:
                    if pin.idle or release_all:
                        self._uncache(pin)
                    else:
                        pin.idle = True
            by_node, self._elsewhere = {self._node_address: freed, **self._elsewhere}, {}
        # Pins first: an object freed with its pin released leaves the store with its region
        # free at once, rather than held for a moment by a pin on its way.
        self._release()
        for node_address, ids in by_node.items():
            node = self._node if node_address == self._node_address else NodeStoreClient(
                self._rt.channels, node_address, self._rt.deadlines
            )
            self._send(partial(node.delete, ids), ids)

    def _release(self) -> None:
        """Give back the pins no mapping and no cache holds any more."""
        with self._lock:
            self._drain_unmapped()
            releasing, self._releasing = self._releasing, []
        pins = [(p.object_id, p.location.offset) for p in releasing]
        self._send(partial(self._node.release, self._rt.address, pins), releasing)

    def _uncache(self, pin: _Pin | None) -> None:
        if pin is not None and pin.cached:
            del self._pins[pin.object_id]
            pin.cached = False
            if pin.unread:  # freed or idle before any read: stop pinning ahead until one needs it
                self._open_ahead = False
            if not pin.mappings:
                self._releasing.append(pin)

    @staticmethod
    def _send(call: Callable[[], object], items: list[Any]) -> None:
        if items:
            try:
                call()
            except RpcFailedError:
                pass  # the node is gone, and its store with it

    def list(self) -> StoreListing:
        return self._node.list()

    def close(self) -> None:
        # Pins still mapped stay: the node drops them once this process is gone.
        self._closed.set()
        self.flush(release_all=True)
        with self._lock:
            arena, self._arena = self._arena, None
        if arena is not None:
            arena.close()


def _lost(object_id: str, why: str, e: RpcFailedError) -> ObjectLostError:
    code = e.code.name if e.code is not None else "UNKNOWN"
    return ObjectLostError(f"object {object_id} is lost: {why} ({code}: {e.details})", object_id=object_id)
