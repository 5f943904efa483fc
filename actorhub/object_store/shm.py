"""The shared-memory segment format of the object store, and zero-copy reads of it.

A segment holds one object, either in a region of the node's arena (one sparse file on
/dev/shm per node, see `Arena`) or alone in a file (a spill file on disk):

    header   fixed part: magic, version, number of buffers, inband length, total size
             then, per out-of-band buffer: offset, length (from the start of the segment)
    inband   the pickle stream (protocol 5), with the big buffers left out of it
    buffers  the out-of-band buffers, each at an offset aligned to 64 bytes

Readers hand pickle read-only memoryviews into a mapping, so a numpy array comes back
sharing memory with the segment, read-only, without a copy. Arena readers slice them from one
read-only mapping of the whole arena, made once per process (a get is then a few Python
objects: no mmap or munmap, and pages already in the page table fault no more); a spill file
is mapped alone. Every view given out holds the segment's anchor alive, and `on_release` says
when the last one is gone: until then the store must not reuse the region.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import mmap
import os
import pickle
import shutil
import struct
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MAGIC = b"AHOBJ\x00\x00\x01"
VERSION = 1
# 64 bytes: a cache line, and the widest SIMD load numpy's kernels use (AVX-512).
ALIGNMENT = 64

_FIXED = struct.Struct("<8sIIQQ")  # magic, version, buffer count, inband length, total size
_BUFFER = struct.Struct("<QQ")  # offset, length
# Linux takes at most IOV_MAX (1024) slices per pwritev, and writes less than 2 GiB per call.
_IOV_MAX = 1024


class CorruptSegmentError(ValueError):
    """The file is not a segment this version can read (wrong magic, version or size)."""


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


class Serialized:
    """A value pickled with its big buffers out of band, and where each goes in a segment."""

    __slots__ = ("buffers", "header_size", "inband", "offsets", "total_size")

    def __init__(self, inband: bytes, buffers: list[memoryview]) -> None:
        self.inband = inband
        self.buffers = buffers
        self.header_size = _FIXED.size + _BUFFER.size * len(buffers)
        offsets: list[int] = []
        end = self.header_size + len(inband)
        for buffer in buffers:
            start = _align(end)
            offsets.append(start)
            end = start + buffer.nbytes
        self.offsets: tuple[int, ...] = tuple(offsets)
        # Bytes the segment file takes: header, inband, buffers with their alignment padding.
        self.total_size = end

    def header(self) -> bytes:
        parts = [_FIXED.pack(MAGIC, VERSION, len(self.buffers), len(self.inband), self.total_size)]
        parts.extend(_BUFFER.pack(o, b.nbytes) for o, b in zip(self.offsets, self.buffers, strict=True))
        return b"".join(parts)


def serialize(value: Any) -> Serialized:
    # Here, not at the top: the launcher imports this module, and must not wait for cloudpickle.
    from actorhub.runtime.serialization import dumps

    buffers: list[memoryview] = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(buffer.raw())
        except BufferError:
            return True  # not contiguous: pickle copies it in band instead
        return False

    inband = dumps(value, buffer_callback=keep_out_of_band)
    return Serialized(inband, buffers)


def deserialize(s: Serialized) -> Any:
    """Load a Serialized value in process, without a segment (the buffers are shared)."""
    return pickle.loads(s.inband, buffers=s.buffers)


def write_segment(path: Path, s: Serialized) -> int:
    """Create `path` (which must not exist) holding `s`; returns the file's size.

    Each buffer is copied once, by the kernel, from the value's memory into the file. Written
    with pwritev rather than through a writable mapping: on tmpfs the mapping takes a page
    fault per 4 KiB page it touches, which halves the throughput (0.9 vs 2 GB/s measured).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, s.total_size)
        # Alignment gaps are left as holes: ftruncate made them read as zeros already.
        pieces: list[tuple[int, memoryview]] = [(0, memoryview(s.header())), (s.header_size, memoryview(s.inband))]
        pieces.extend(zip(s.offsets, s.buffers, strict=True))
        _write_pieces(fd, pieces)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)
    return s.total_size


def _write_pieces(fd: int, pieces: Sequence[tuple[int, memoryview]]) -> None:
    """Write each (offset, bytes) piece, batching adjacent ones into one pwritev."""
    runs: list[tuple[int, list[memoryview]]] = []
    end = -1
    for offset, view in pieces:
        if not view.nbytes:
            continue
        if offset == end and len(runs[-1][1]) < _IOV_MAX:
            runs[-1][1].append(view)
        else:
            runs.append((offset, [view]))
        end = offset + view.nbytes
    for offset, views in runs:
        while views:
            written = os.pwritev(fd, views, offset)
            offset += written
            # A short write (2 GiB cap, a signal): drop what went out and resume mid-view.
            while views and written >= views[0].nbytes:
                written -= views[0].nbytes
                views.pop(0)
            if written:
                views[0] = views[0][written:]


def read_segment(path: Path, on_release: Callable[[], None] | None = None) -> Any:
    """Load the object in the file `path` (a whole-file segment, as spill files are)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_region(fd, 0, os.fstat(fd).st_size, on_release, str(path))
    finally:
        os.close(fd)


def read_region(
    fd: int, offset: int, length: int, on_release: Callable[[], None] | None = None, name: str = "segment"
) -> Any:
    """Load the segment of `length` bytes at `offset` (page-aligned) of the file open as `fd`.

    Its buffers are read-only views into a mapping of just that region. `on_release`, when
    given, runs once the mapping is gone: after the last array (or other object) built on its
    buffers has been collected, or at once if the value kept none.
    """
    if length < _FIXED.size:
        raise CorruptSegmentError(f"{name}: {length} bytes, shorter than a segment header")
    # The mapping holds the pages by itself: the caller may close `fd` at once.
    mm = mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=offset)
    if on_release is not None:
        # Not at interpreter exit: whatever the callback reports to may be gone by then.
        weakref.finalize(mm, on_release).atexit = False
    return _load(memoryview(mm), name)


def read_view(view: memoryview, on_release: Callable[[], None] | None = None, name: str = "segment") -> Any:
    """Load the segment that `view` (a read-only slice of a longer mapping) holds, zero-copy.

    The buffers handed to pickle are views of an anchor made for this read alone: every
    memoryview, array or buffer export derived from them keeps the anchor alive, however it
    was derived (slices, casts, `memoryview(x)`), so `on_release` runs exactly when the last
    of them is gone, or at once if the value kept none.
    """
    if view.nbytes < _FIXED.size:
        raise CorruptSegmentError(f"{name}: {view.nbytes} bytes, shorter than a segment header")
    # `view` is a slice: views derived from a memoryview share its parent's buffer record, so
    # it could die while they live. A PickleBuffer hides that it wraps a memoryview, so the
    # memoryview made of it gets a buffer record of its own, which holds `view`: the anchor.
    anchor = memoryview(pickle.PickleBuffer(view))
    if on_release is not None:
        weakref.finalize(view, on_release).atexit = False
    del view
    return _load(anchor, name)


def _load(view: memoryview, name: str) -> Any:
    """Unpickle the segment `view` holds, its out-of-band buffers as read-only slices of it."""
    length = view.nbytes
    magic, version, count, inband_length, total = _FIXED.unpack_from(view, 0)
    if magic != MAGIC or version != VERSION:
        raise CorruptSegmentError(f"{name}: not an actorhub object segment (magic {magic!r}, version {version})")
    if total != length:
        raise CorruptSegmentError(f"{name}: header says {total} bytes, the segment has {length}")
    buffers: list[memoryview] = []
    for index in range(count):
        start, size = _BUFFER.unpack_from(view, _FIXED.size + index * _BUFFER.size)
        if start + size > length:
            raise CorruptSegmentError(f"{name}: buffer {index} ends past the end of the segment")
        buffers.append(view[start : start + size])
    start = _FIXED.size + count * _BUFFER.size
    if start + inband_length > length:
        raise CorruptSegmentError(f"{name}: pickle stream ends past the end of the segment")
    with view[start : start + inband_length] as inband:
        return pickle.loads(inband, buffers=buffers)


def segment_size(fd: int, offset: int, limit: int) -> int:
    """The size a written segment at `offset` of `fd` declares; CorruptSegmentError if none is there."""
    header = os.pread(fd, _FIXED.size, offset)
    if len(header) < _FIXED.size:
        raise CorruptSegmentError(f"no segment header at offset {offset}")
    magic, version, _, _, total = _FIXED.unpack(header)
    if magic != MAGIC or version != VERSION or not _FIXED.size <= total <= limit:
        raise CorruptSegmentError(f"no segment at offset {offset} (magic {magic!r}, {total} of {limit} bytes)")
    return int(total)


def copy_range(src: Path, src_offset: int, dst: Path, dst_offset: int, length: int, *, create: bool) -> None:
    """Copy `length` bytes between files in the kernel (sendfile): spilling and restoring.

    `create` makes `dst` (which must not exist, and is removed again if the copy fails);
    otherwise it is an existing file, written in place (the arena).
    """
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # A descriptor of its own: sendfile writes at the file position, which it moves.
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    except BaseException:
        os.close(src_fd)
        raise
    try:
        os.lseek(dst_fd, dst_offset, os.SEEK_SET)
        done = 0
        while done < length:
            sent = os.sendfile(dst_fd, src_fd, src_offset + done, length - done)
            if sent == 0:
                raise OSError(f"{src} ended {length - done} bytes short of the copy")
            done += sent
    except BaseException:
        if create:
            unlink_quietly(dst)
        raise
    finally:
        os.close(dst_fd)
        os.close(src_fd)


class Arena:
    """One process's handle on a node's arena file, opened once and kept for every object.

    Writes are a memcpy into a writable mapping of the whole arena once this process has the
    region's pages in its page table: 9 GB/s here, against 5.4 GB/s for pwritev into the same
    (already allocated) pages and 1.9 GB/s for a memcpy taking a page fault per 4 KiB. So:
    - pages this process mapped before: memcpy (the steady state: regions are reused);
    - pages the kernel has (an earlier object used them): populate the page table in one
      madvise call first, about 13 ms per 100 MB once, then memcpy;
    - holes (never used): pwritev, which allocates them fastest (2.2 GB/s, faults 1.1);
      the next write there takes the path above.
    The writable mapping is made at the first write: processes that only read never make it.

    `read_shared` slices a second mapping of the whole arena, read-only (PROT_READ: not even
    ctypes can write through it), made at its first use and kept: a read maps nothing, and
    pages the process touched once stay in its page table, so reading a reused region faults
    no more (summing a 100 MB array read again: 31 ms, against 80 ms through a fresh mapping).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.size = os.fstat(fd).st_size
        self._fd = fd
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._anchor: Any = None  # a ctypes view of _map, for its address
        self._closed = False
        self._mapped = bytearray(self.size // mmap.PAGESIZE + 1)  # 1 = page in our page table
        self._reads: mmap.mmap | None = None  # the read-only mapping of the whole arena
        self._view: memoryview | None = None  # and a view of it, which reads slice
        self._close_fd = weakref.finalize(self, os.close, fd)

    @classmethod
    def create(cls, path: Path, size: int) -> Arena:
        """Make the arena file, sparse: it takes memory only as pages are first written."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            unlink_quietly(path)
            raise
        return cls(path, fd)

    @classmethod
    def open(cls, path: Path) -> Arena:
        return cls(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def write(self, offset: int, s: Serialized) -> None:
        """Write `s` as the segment at `offset` (page-aligned), inside its reserved region."""
        pieces: list[tuple[int, memoryview]] = [(0, memoryview(s.header())), (s.header_size, memoryview(s.inband))]
        pieces.extend(zip(s.offsets, s.buffers, strict=True))
        end = offset + s.total_size
        first, last = offset // mmap.PAGESIZE, -(-end // mmap.PAGESIZE)
        # Held until the copies are done: close() on another thread cannot unmap under them.
        mapping, anchor = self._mapping()
        base = ctypes.addressof(anchor)
        if self._mapped.find(0, first, last) != -1:
            start, length = first * mmap.PAGESIZE, (last - first) * mmap.PAGESIZE
            if not self._allocated(base, start, length):
                # Alignment gaps stay unwritten: they are inside pages the rest fills anyway.
                _write_pieces(self._fd, [(offset + at, view) for at, view in pieces])
                return
            _populate(base + start, length)
            self._mapped[first:last] = bytes([1]) * (last - first)
        for at, view in pieces:
            size = view.nbytes
            source = _address_of(view) if size >= _MEMMOVE_MIN else None
            if source is not None:
                _memmove(base + offset + at, source[0], size)
            elif size:
                with memoryview(mapping) as whole:
                    whole[offset + at : offset + at + size] = view

    def read(self, offset: int, length: int, on_release: Callable[[], None] | None = None) -> Any:
        """Load the segment of `length` bytes at `offset` through a mapping of its own region
        (for a process that reads an object once, such as the node's own store)."""
        return read_region(self._fd, offset, length, on_release, f"{self.path}@{offset}")

    def read_shared(self, offset: int, length: int, on_release: Callable[[], None] | None = None) -> Any:
        """Load the segment of `length` bytes at `offset` from this process's read-only mapping
        of the whole arena (see the class); `on_release` as in `read_view`."""
        view = self._view
        if view is None:
            view = self._read_mapping()
        if not 0 <= offset <= self.size - length:
            raise CorruptSegmentError(f"{self.path}@{offset}: {length} bytes past the end of the arena")
        return read_view(view[offset : offset + length], on_release, f"{self.path}@{offset}")

    def _read_mapping(self) -> memoryview:
        with self._lock:
            if self._view is None:
                if self._closed:
                    raise ValueError(f"arena {self.path} is closed")
                self._reads = mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ)
                self._view = memoryview(self._reads)
            return self._view

    def clear_header(self, offset: int) -> None:
        """Make the region at `offset` hold no segment, so a seal before any write is caught."""
        os.pwrite(self._fd, bytes(_FIXED.size), offset)

    def segment_size(self, offset: int, limit: int) -> int:
        return segment_size(self._fd, offset, limit)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            mapping, self._map, self._anchor = self._map, None, None
            if mapping is not None:
                try:
                    mapping.close()
                except BufferError:
                    pass  # a write in flight on another thread: unmapped when it lets go
            view, reads, self._view, self._reads = self._view, self._reads, None, None
            if view is not None and reads is not None:
                try:
                    view.release()
                    reads.close()
                except BufferError:
                    pass  # values read are still alive: unmapped when the last of them goes
            self._close_fd()

    def _mapping(self) -> tuple[mmap.mmap, Any]:
        """The writable mapping of the whole arena, made at the first write, and a ctypes view
        of it (which exports its buffer: while someone holds it, it cannot be unmapped)."""
        with self._lock:
            if self._map is None:
                if self._closed:
                    raise ValueError(f"arena {self.path} is closed")
                self._map = mmap.mmap(self._fd, self.size)
                self._anchor = (ctypes.c_char * self.size).from_buffer(self._map)
            return self._map, self._anchor

    def _allocated(self, base: int, start: int, length: int) -> bool:
        """Whether the kernel has every page of the range (an earlier object wrote there)."""
        # mincore, not lseek(SEEK_HOLE): that one scans on past the range to the next hole,
        # through the whole used part of the arena.
        vector = (ctypes.c_ubyte * (length // mmap.PAGESIZE))()
        if _libc is None or _libc.mincore(base + start, length, vector) != 0:
            return os.lseek(self._fd, start, os.SEEK_HOLE) >= start + length
        return bytes(vector).find(0) == -1


def _populate(address: int, length: int) -> None:
    """Map the (allocated) pages of a range into this process's page table, in one call."""
    # Through ctypes so the GIL is released; read faults, because on a shared mapping of
    # tmpfs they map the page writable and bring 16 pages at once (fault-around).
    if _libc is None or _libc.madvise(address, length, _MADV_POPULATE_READ) != 0:
        # Before Linux 5.14: touch one byte per page, the same faults taken from Python.
        for page in range(address, address + length, mmap.PAGESIZE):
            ctypes.c_char.from_address(page).value  # noqa: B018


# Linux's MADV_POPULATE_READ (5.14), which Python 3.11's mmap module does not name.
_MADV_POPULATE_READ = 22
# Below this a copy is cheap enough under the GIL, and not worth finding the address.
_MEMMOVE_MIN = 64 * 1024
try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
    _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _libc.madvise.restype = ctypes.c_int
    _libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    _libc.mincore.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - every Linux libc has madvise
    _libc = None


# Large copies are split over this many threads: one core's stores do not saturate memory
# (100 MB here: 11 GB/s on one thread, 19 GB/s on two; Ray's put does the same).
_COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
# Below this, handing half of the copy to another thread costs more than it saves.
_PARALLEL_MIN = 4 << 20
_copy_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, pool)
_copy_pool_lock = threading.Lock()


def _memmove(destination: int, source: int, size: int) -> None:
    """memcpy, through ctypes, which releases the GIL: other threads run meanwhile."""
    global _copy_pool
    if size < _PARALLEL_MIN or _COPY_THREADS == 1:
        ctypes.memmove(destination, source, size)
        return
    with _copy_pool_lock:
        # A forked child has the pool but not its threads: it makes its own.
        if _copy_pool is None or _copy_pool[0] != os.getpid():
            _copy_pool = os.getpid(), concurrent.futures.ThreadPoolExecutor(_COPY_THREADS - 1, "actorhub-copy")
        pool = _copy_pool[1]
    part = -(-size // _COPY_THREADS // mmap.PAGESIZE) * mmap.PAGESIZE
    others = [
        pool.submit(ctypes.memmove, destination + start, source + start, min(part, size - start))
        for start in range(part, size, part)
    ]
    ctypes.memmove(destination, source, min(part, size))
    for other in others:
        other.result()


def _address_of(view: memoryview) -> tuple[int, object] | None:
    """The address of a contiguous buffer's bytes, with what keeps it valid meanwhile."""
    if not view.readonly:
        holder = (ctypes.c_char * view.nbytes).from_buffer(view)
        return ctypes.addressof(holder), holder
    # ctypes refuses read-only buffers; numpy, if the value came from it, does not.
    numpy: Any = sys.modules.get("numpy")
    if numpy is None:
        return None
    array = numpy.frombuffer(view, dtype=numpy.uint8)
    return int(array.ctypes.data), array


def segments_name(session_dir: Path, node_id: str) -> str:
    """The name of a node's segment directory (`actorhub-<this>` under `segment_root()`)."""
    return f"{session_dir.name[-6:]}-{node_id}"


def segment_root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def segment_dir(session_id: str) -> Path:
    """The session's segment directory (made if missing, private to this user)."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        raise ValueError(f"bad session id for a directory name: {session_id!r}")
    return private_dir(segment_root() / f"actorhub-{session_id}", "shared-memory directory")


def private_dir(path: Path, what: str) -> Path:
    """Make `path` (0700), or accept one that exists only if it is ours and closed to others.

    /dev/shm is writable by every local user: one could make our directory first, open to
    all, and change the arena bytes our processes unpickle. Raises UnsafeDirectoryError.
    """
    # Lazy: the check lives with the session directories, which this module does not need.
    from actorhub.cluster.session import check_private

    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path, what)
    return path


def remove_segment_dir(session: str | Path) -> None:
    """Delete a session's segments, given its id or what segment_dir returned for it.

    Processes that still map some of them keep their pages until they unmap.
    """
    path = session if isinstance(session, Path) else segment_root() / f"actorhub-{session}"
    shutil.rmtree(path, ignore_errors=True)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
