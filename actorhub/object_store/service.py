"""The node agent's object store RPCs, over actorhub.tasks' NodeObjectStore.

The store's code belongs to the tasks layer; the node agent imports it only when it starts
(processes may import it lazily; the kernel's modules never do at import time).

The RPCs are served on the node agent's event loop. Bookkeeping that only takes the store's
lock for a moment (seal, release, list) runs on the loop itself; anything that may copy
bytes or wait runs on bounded executors, so the loop stays responsive while it does:
- reserve, open, delete: making room spills objects to disk, opening a spilled object
  restores it, deleting unlinks spill files (`_store_io`); an open of an object still being
  written or pulled waits for its seal on the loop, polling, holding no thread;
- PullObject: a whole transfer from another node (`_pulls`); its own pulls block on nothing
  of this node's loop, so two nodes pulling from each other cannot deadlock;
- ReadObject: each chunk's read (`_reads`), the stream's writes on the loop, so a slow
  puller holds no thread;
- WriteObject (a process whose node's arena is not visible to it): the reserve on
  `_store_io`, each chunk's write on `_reads`, the stream's reads on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from actorhub._proto.v1 import common_pb2, node_pb2
from actorhub.config import RpcDeadlines
from actorhub.exceptions import ObjectLostError, RpcFailedError
from actorhub.wire.rpc import GONE_CODES
from actorhub.wire.server import abort
from actorhub.wire.transport import ChannelPool
from actorhub.wire.worker import WorkerClient

# Ray's default: 30% of the machine's memory, bounded by what /dev/shm can hold.
_DEFAULT_SHARE = 0.3
# How often owners of stored objects are checked: a dead owner's objects are freed.
_OWNER_CHECK_S = 1.0
# Threads for store calls that may copy bytes (spills, restores, unlinks), for pulls from other
# nodes, and for reading chunks of objects other nodes pull. Calls beyond them wait their turn.
_STORE_IO_THREADS = 8
_PULL_THREADS = 8
_READ_THREADS = 4
# How often an open of an object still being written or pulled looks again.
_SETTLE_POLL_S = (0.002, 0.05)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def default_capacity(shm_root: Path) -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    capacity = int(total * _DEFAULT_SHARE)
    try:
        capacity = min(capacity, int(shutil.disk_usage(shm_root).free * 0.8))
    except OSError:
        pass
    return max(capacity, 64 * 1024 * 1024)


def _segments_name(session_dir: Path, node_id: str) -> str:
    return f"{session_dir.name[-6:]}-{node_id}"


def remove_session_segments(session_dir: Path) -> list[Path]:
    """Remove every node's segment directory of a session; returns those it removed.

    A node agent removes its own when it stops; one killed with SIGKILL cannot, and /dev/shm
    outlives processes, so whoever stops the cluster sweeps up after it. A directory that is
    not ours and private is left alone: another user may have made it, and it is not ours to
    delete (nor to trust).
    """
    from actorhub.cluster.session import check_private
    from actorhub.exceptions import UnsafeDirectoryError
    from actorhub.object_store import shm as _shm
    removed = []
    for path in _shm.segment_root().glob(f"actorhub-{_segments_name(session_dir, '*')}"):
        try:
            check_private(path, "shared-memory directory")
        except (UnsafeDirectoryError, FileNotFoundError):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _abandon_begun(begun: concurrent.futures.Future[Any]) -> None:
    if not begun.cancelled() and begun.exception() is None:
        begun.result().abandon()


def _write_arena_id(path: Path) -> str:
    arena_id = secrets.token_hex(16)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, arena_id.encode())
    finally:
        os.close(fd)
    return arena_id


class NodeObjects:
    def __init__(
        self,
        session_dir: Path,
        node_id: str,
        capacity: int | None,
        channels: ChannelPool | None = None,
        lost_result_grace_s: float = 10.0,
        deadlines: RpcDeadlines | None = None,
    ) -> None:
        from actorhub.object_store import shm as _shm
        from actorhub.object_store.remote import ARENA_ID_FILE
        from actorhub.object_store.store import NodeObjectStore
        from actorhub.object_store.transfer import ObjectTransfer

        self._segments = _segments_name(session_dir, node_id)
        shm_dir = _shm.segment_dir(self._segments)
        self.store: Any = NodeObjectStore(
            capacity or default_capacity(shm_dir.parent), shm_dir, session_dir / f"spill-{node_id}"
        )
        # Beside the arena, the id DescribeStore reports: a process that reads the same id there
        # sees this arena (the node's host and /dev/shm), any other streams objects instead.
        self._arena_id = _write_arena_id(shm_dir / ARENA_ID_FILE)
        self._deadlines = deadlines or RpcDeadlines()
        transfer_channels = channels if channels is not None else ChannelPool("")
        self.transfer: Any = ObjectTransfer(self.store, transfer_channels, self._deadlines)
        self._closed = threading.Event()
        # Results a callee stored for its caller, until the callee is found dead: store id ->
        # (writer, owner). If the callee died before its reply reached the caller, the caller
        # never learns the id, and nothing else would ever free the object while it lives.
        self._written_for: dict[str, tuple[str, str]] = {}
        self._writers_gone: dict[str, float] = {}  # writer -> when it was first found gone
        # Long enough for replies the caller already received to be read before it is asked.
        self._lost_result_grace_s = lost_result_grace_s
        self._lock = threading.Lock()
        pool = concurrent.futures.ThreadPoolExecutor
        self._store_io = pool(_STORE_IO_THREADS, thread_name_prefix="actorhub-store-io")
        self._pulls = pool(_PULL_THREADS, thread_name_prefix="actorhub-store-pull")
        self._reads = pool(_READ_THREADS, thread_name_prefix="actorhub-store-read")
        if channels is not None:
            threading.Thread(
                target=self._free_objects_of_dead_owners, args=(channels,), name="actorhub-store-owners", daemon=True
            ).start()

    def _free_objects_of_dead_owners(self, channels: ChannelPool) -> None:
        # Nothing is lost while its owner lives; once it is gone (a driver killed with SIGKILL
        # never says goodbye) nobody can reach its objects again, so their memory goes back.
        # A reader that died cannot release its pins either, so they are dropped; but only once
        # nothing listens at its address: one merely too busy to answer (a long call holding
        # the GIL) still maps its regions, which must not change under it.
        while not self._closed.wait(_OWNER_CHECK_S):
            owners = {o.owner for o in self.store.list()}
            with self._lock:
                writers = {writer for writer, _ in self._written_for.values()} - set(self._writers_gone)
            for peer in owners | self.store.readers() | writers:
                if not peer:
                    continue
                code = WorkerClient(channels, peer, self._deadlines, "peer").ping()
                owner_gone = peer in owners and code in GONE_CODES
                refused = code is grpc.StatusCode.UNAVAILABLE  # nothing listens: a reader or writer died
                if owner_gone:
                    self.transfer.forget(self.store.delete_owned_by(peer))
                if refused:
                    self.store.drop_reader(peer)
                    if peer in writers:
                        with self._lock:
                            self._writers_gone[peer] = time.monotonic()
                if owner_gone or refused:
                    channels.discard(peer)
            self._free_lost_results(channels)

    def _free_lost_results(self, channels: ChannelPool) -> None:
        """Ask the owners of results whose writers died which ones they know; free the rest."""
        now = time.monotonic()
        by_owner: dict[str, list[str]] = {}
        with self._lock:
            for store_id in [i for i in self._written_for if i not in self.store]:
                del self._written_for[store_id]  # freed already
            settled = {w for w, since in self._writers_gone.items() if now - since >= self._lost_result_grace_s}
            for store_id, (writer, owner) in list(self._written_for.items()):
                if writer in settled:
                    by_owner.setdefault(owner, []).append(store_id)
                    del self._written_for[store_id]
            for writer in settled:
                del self._writers_gone[writer]
        for owner, ids in by_owner.items():
            try:
                held = WorkerClient(channels, owner, self._deadlines, "owner").held_store_ids(ids)
            except RpcFailedError:
                continue  # gone too: its objects go with it; or too busy: they stay, as before
            self._delete([i for i in ids if i not in held])

    def close(self) -> None:
        from actorhub.object_store import shm as _shm
        self._closed.set()
        for executor in (self._store_io, self._pulls, self._reads):
            executor.shutdown(wait=False, cancel_futures=True)
        self.transfer.close()
        self.store.close()
        _shm.remove_segment_dir(self._segments)

    @staticmethod
    def _location(location: Any) -> node_pb2.ObjectLocation:
        return node_pb2.ObjectLocation(
            path=str(location.path),
            offset=location.offset,
            length=location.size,
            arena=location.where == "shared memory",
        )

    def serving_at(self, address: str) -> None:
        """This node agent's address, which other nodes are told to send deletes of copies to."""
        self.transfer.address = address

    def _delete(self, object_ids: Iterable[str]) -> None:
        self.transfer.forget([object_id for object_id in object_ids if self.store.delete(object_id)])

    @staticmethod
    async def _on(executor: concurrent.futures.Executor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def reserve(self, request: node_pb2.ReserveObjectRequest, context: Context) -> node_pb2.ObjectLocation:
        try:
            return await self._on(self._store_io, self._reserve, request)
        except ValueError as e:
            await abort(context,
                grpc.StatusCode.ALREADY_EXISTS if "already" in str(e) else grpc.StatusCode.INVALID_ARGUMENT, str(e),
            )
            raise  # not reached: abort raises

    def _reserve(self, request: node_pb2.ReserveObjectRequest) -> node_pb2.ObjectLocation:
        self._delete(request.delete_first)
        if request.writer:
            with self._lock:
                self._written_for[request.object_id] = (request.writer, request.owner)
        return self._location(self.store.reserve(request.object_id, request.size, request.owner))

    async def seal(self, request: node_pb2.ObjectIdRequest, context: Context) -> node_pb2.ObjectLocation:
        # Under the store's lock for a moment (it reads the segment's header): on the loop.
        try:
            return self._location(self.store.seal(request.object_id, request.reader))
        except Exception as e:  # freed before sealing, or sealed twice: the writer is told why
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise  # not reached: abort raises

    async def open(self, request: node_pb2.OpenObjectRequest, context: Context) -> node_pb2.ObjectLocation:
        from actorhub.object_store.store import ObjectNotInStoreError

        poll_s, max_poll_s = _SETTLE_POLL_S
        while True:
            try:
                # timeout 0: an object being written, pulled, spilled or restored by someone
                # else raises TimeoutError at once instead of holding the thread until it settles.
                location = await self._on(self._store_io, self.store.open, request.object_id, request.reader, 0.0)
                return self._location(location)
            except ObjectNotInStoreError as e:
                await abort(context, grpc.StatusCode.NOT_FOUND, str(e))
                raise  # not reached: abort raises
            except TimeoutError:
                pass
            remaining = context.time_remaining()
            if remaining is not None and remaining <= poll_s:
                await abort(context,
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"object {request.object_id} was not sealed in time",
                )
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, max_poll_s)

    def release(self, request: node_pb2.ReleaseObjectsRequest) -> common_pb2.Empty:
        for pin in request.pins:
            self.store.release(pin.object_id, pin.offset, request.reader)
        return common_pb2.Empty()

    async def delete(self, request: node_pb2.DeleteObjectsRequest) -> common_pb2.Empty:
        # Off the loop: deleting a spilled object unlinks its file.
        await self._on(self._store_io, self._delete, list(request.object_ids))
        return common_pb2.Empty()

    async def pull(self, request: node_pb2.PullObjectRequest, context: Context) -> common_pb2.Empty:
        from actorhub.object_store.transfer import PullError

        if request.object_id in self.store:
            return common_pb2.Empty()  # here already, or being pulled: readers' opens wait for the seal
        if not request.source:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"PullObject of {request.object_id} names no source node"
            )
        try:
            await self._on(self._pulls, self.transfer.pull, request.object_id, request.source, request.owner)
        except PullError as e:
            await abort(context, e.code, str(e))
        except OSError as e:  # no room on /dev/shm or the spill disk
            await abort(context,
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot store a copy of {request.object_id}: {e}",
            )
        return common_pb2.Empty()

    async def read(
        self, request: node_pb2.ReadObjectRequest, context: Context,
    ) -> AsyncGenerator[node_pb2.ObjectChunk, None]:
        """The object's segment in chunks; each read on `_reads`, the writes on the loop."""
        from actorhub.object_store.store import ObjectNotInStoreError

        chunks = self.transfer.serve(request.object_id, request.puller, copy=not request.into_process)
        pending: concurrent.futures.Future[Any] | None = None
        try:
            while True:
                pending = self._reads.submit(next, chunks, None)
                chunk = await asyncio.wrap_future(pending)
                pending = None
                if chunk is None:
                    return
                total_size, offset, data = chunk
                yield node_pb2.ObjectChunk(total_size=total_size, offset=offset, data=data)
        except ObjectNotInStoreError as e:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except OSError as e:
            await abort(context, grpc.StatusCode.DATA_LOSS, f"cannot read object {request.object_id}: {e}")
        finally:
            # Closed with this stream, as `yield from` would: a cancelled pull unpins at once.
            # A read still running on its thread closes the chunks itself once it is done.
            if pending is not None:
                pending.add_done_callback(lambda _: chunks.close())
            else:
                chunks.close()

    def describe(self) -> node_pb2.StoreInfo:
        return node_pb2.StoreInfo(arena_path=str(self.store.arena_path), arena_id=self._arena_id)

    async def write(
        self, requests: AsyncIterator[node_pb2.ObjectWrite], context: Context,
    ) -> node_pb2.ObjectLocation:
        """A segment sent in chunks by a process that cannot map the arena; sealed at the end."""
        from actorhub.object_store.store import ObjectExistsError
        from actorhub.object_store.transfer import BadChunkError

        incoming: Any = None
        try:
            async for message in requests:
                if incoming is None:
                    begun = self._store_io.submit(self._begin_write, message.reserve)
                    try:
                        incoming = await asyncio.wrap_future(begun)
                    except asyncio.CancelledError:
                        begun.add_done_callback(_abandon_begun)  # reserved all the same: give it back
                        raise
                await self._on(self._reads, incoming.write, message.offset, message.data)
            if incoming is None:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "WriteObject sent no chunk")
            return self._location(await self._on(self._store_io, incoming.finish))
        except ObjectExistsError as e:
            await abort(context, grpc.StatusCode.ALREADY_EXISTS, str(e))
        except (BadChunkError, ValueError) as e:  # an unusable id or size, chunks out of order
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ObjectLostError as e:  # freed (its owner found dead) before it was sealed
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except OSError as e:  # no room on /dev/shm or the spill disk
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot store the object: {e}")
        finally:
            if incoming is not None:
                # A write of this stream may still run on its thread (the call was cancelled):
                # the abandon waits for it there, not on the loop. Nothing once sealed.
                try:
                    self._store_io.submit(incoming.abandon)
                except RuntimeError:  # closing: the store goes with the node anyway
                    pass

    def _begin_write(self, request: node_pb2.ReserveObjectRequest) -> Any:
        from actorhub.object_store.transfer import Incoming

        if not request.size:
            raise ValueError(f"WriteObject of {request.object_id!r} names no size")
        self._delete(request.delete_first)
        if request.writer:
            with self._lock:
                self._written_for[request.object_id] = (request.writer, request.owner)
        return Incoming(self.store, request.object_id, request.size, request.owner)

    def list(self) -> node_pb2.ListObjectsReply:
        stats = self.store.stats()
        return node_pb2.ListObjectsReply(
            objects=[
                node_pb2.StoredObject(object_id=o.object_id, size=o.size, owner=o.owner, where=str(o.where),
                                      is_copy=o.is_copy)
                for o in self.store.list()
            ],
            capacity=stats.capacity_bytes,
            used=stats.shm_bytes,
            spilled=stats.spilled_bytes,
        )
