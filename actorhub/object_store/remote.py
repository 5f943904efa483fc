"""Objects for a process that cannot map its node's arena: streamed in chunks, not mapped.

A driver connected from another host (or from a private /dev/shm) has a node, but not that
node's shared memory. Its store client finds that out once (`arena_visible`: the node reports
its arena's path and a random id written beside it; only a process that sees that file there
maps the arena) and then moves large values in chunks over gRPC instead:
- a put streams the segment to its node (`WriteObject`), which writes each chunk into the
  region it reserved and seals it under the same id and owner as a mapped put would;
- a read streams the segment from the node that holds it (`ReadObject`, `into_process`) into
  a private anonymous mapping, and loads it from there: numpy arrays come back read-only, as
  from the arena, and their memory is this process's until the last of them is gone.
No message is larger than a chunk, so values larger than protobuf's 2 GiB cross too. Small
values travel inline as everywhere; processes that see the arena never come here.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actorhub.object_store import shm as _shm
from actorhub.wire.store import NodeStoreClient, StoreInfo

# Beside the arena (the node agent writes it, see service.py).
ARENA_ID_FILE = "arena.id"


_PRIVATE_MEMORY = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


class ChunkStreamError(Exception):
    """A segment's chunks arrived out of order, or fewer than its size: nothing to load."""


def arena_visible(info: StoreInfo) -> bool:
    """Whether this process sees the node's arena: the id beside it is the one the node reports."""
    try:
        with open(Path(info.arena_path).parent / ARENA_ID_FILE, "rb") as f:
            return bool(info.arena_id) and f.read(256).decode(errors="replace") == info.arena_id
    except OSError:
        return False


def write(
    node: NodeStoreClient, object_id: str, serialized: _shm.Serialized, owner: str, delete_first: list[str],
    writer: str,
) -> None:
    """Store `serialized` in `node`'s store under `object_id`, sealed when this returns."""
    # Here, not at the top: the store's modules are the node agent's; a process on the
    # node's host (every worker) imports this module for `arena_visible` alone.
    from actorhub.object_store.transfer import CHUNK_BYTES

    node.write(
        object_id, serialized.total_size, owner, delete_first, writer, segment_chunks(serialized, CHUNK_BYTES)
    )


def segment_chunks(s: _shm.Serialized, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """The segment `s` makes (header, pickle stream, aligned buffers), as (offset, bytes) chunks
    of `chunk_bytes` (the last may be shorter), in order; alignment gaps are zeros."""
    pieces: list[tuple[int, memoryview]] = [(0, memoryview(s.header())), (s.header_size, memoryview(s.inband))]
    pieces.extend(zip(s.offsets, s.buffers, strict=True))
    pieces.append((s.total_size, memoryview(b"")))  # the end: what is left of the last gap
    pending = bytearray()
    at = 0  # the segment offset of pending's first byte
    for offset, piece in pieces:
        gap = offset - (at + len(pending))
        views = [memoryview(bytes(gap)), piece] if gap > 0 else [piece]
        for view in views:
            view = view.cast("B") if view.ndim != 1 or view.format != "B" else view
            done = 0
            while done < view.nbytes:
                if not pending and view.nbytes - done >= chunk_bytes:
                    # A whole chunk of one buffer: one copy, not two.
                    yield at, view[done : done + chunk_bytes].tobytes()
                    at += chunk_bytes
                    done += chunk_bytes
                    continue
                take = min(chunk_bytes - len(pending), view.nbytes - done)
                pending += view[done : done + take]
                done += take
                if len(pending) == chunk_bytes:
                    yield at, bytes(pending)
                    at += chunk_bytes
                    pending.clear()
    if pending:
        yield at, bytes(pending)


def read(node: NodeStoreClient, object_id: str, reader: str) -> Any:
    """The value of `object_id`, streamed from `node`'s store into this process's memory.

    Raises RpcFailedError (the node is gone, or no longer has it) or ChunkStreamError.
    """
    chunks = node.read(object_id, reader, into_process=True)
    memory: mmap.mmap | None = None
    size = received = 0
    for chunk in chunks:
        data = chunk.data
        if memory is None:
            size = chunk.total_size
            # Anonymous, so page-aligned: the segment's 64-byte buffer alignment holds in memory.
            # Private (this process's own memory, not shmem), its pages made at once: faulting
            # them in one by one as chunks land costs about twice as much.
            memory = mmap.mmap(-1, max(size, 1), flags=_PRIVATE_MEMORY)
        if chunk.offset != received or received + len(data) > size:
            chunks.cancel()
            raise ChunkStreamError(
                f"object {object_id}: a chunk of {len(data)} bytes at offset {chunk.offset}, "
                f"where {received} of {size} bytes came so far"
            )
        memory[received : received + len(data)] = data
        received += len(data)
    if memory is None or received != size:
        raise ChunkStreamError(f"object {object_id} ended after {received} of {size} bytes")
    # Read-only views: what a get returns is immutable, as a value mapped from the arena is.
    return _shm.read_view(memoryview(memory).toreadonly()[:size], None, f"object {object_id} from {node.address}")
