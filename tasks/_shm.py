"""The shared-memory segment format of the object store, and zero-copy reads of it.

A segment is one file (on /dev/shm, or a spill file on disk) holding one object:

    header   fixed part: magic, version, number of buffers, inband length, total size
             then, per out-of-band buffer: offset, length (from the start of the file)
    inband   the pickle stream (protocol 5), with the big buffers left out of it
    buffers  the out-of-band buffers, each at an offset aligned to 64 bytes

Readers map the file read-only and hand pickle memoryviews into the mapping, so a numpy
array comes back sharing memory with the segment, read-only, without a copy. Every such
memoryview holds the mapping alive: the file may be unlinked (deleted, spilled) after the
read and the array stays valid until the last reference to it is gone.
"""

from __future__ import annotations

import mmap
import os
import pickle
import shutil
import struct
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cloudpickle

PROTOCOL = 5
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
    buffers: list[memoryview] = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(buffer.raw())
        except BufferError:
            return True  # not contiguous: pickle copies it in band instead
        return False

    inband: bytes = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=keep_out_of_band)
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
    """Load the object in `path`; its buffers are read-only views into a shared mapping.

    `on_release`, when given, runs once the mapping is gone: after the last array (or other
    object) built on its buffers has been collected, or at once if the value kept none.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < _FIXED.size:
            raise CorruptSegmentError(f"{path}: {size} bytes, shorter than a segment header")
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        # The mapping holds the file's pages by itself; the descriptor is no longer needed.
        os.close(fd)
    if on_release is not None:
        # Not at interpreter exit: whatever the callback reports to may be gone by then.
        weakref.finalize(mm, on_release).atexit = False
    magic, version, count, inband_length, total = _FIXED.unpack_from(mm, 0)
    if magic != MAGIC or version != VERSION:
        raise CorruptSegmentError(f"{path}: not an actorhub object segment (magic {magic!r}, version {version})")
    if total != size:
        raise CorruptSegmentError(f"{path}: header says {total} bytes, file has {size}")
    view = memoryview(mm)
    buffers: list[memoryview] = []
    for index in range(count):
        offset, length = _BUFFER.unpack_from(mm, _FIXED.size + index * _BUFFER.size)
        if offset + length > size:
            raise CorruptSegmentError(f"{path}: buffer {index} ends past the end of the file")
        buffers.append(view[offset : offset + length])
    start = _FIXED.size + count * _BUFFER.size
    if start + inband_length > size:
        raise CorruptSegmentError(f"{path}: pickle stream ends past the end of the file")
    with view[start : start + inband_length] as inband:
        return pickle.loads(inband, buffers=buffers)


def segment_root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def segment_dir(session_id: str) -> Path:
    """The session's segment directory (made if missing, private to this user)."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        raise ValueError(f"bad session id for a directory name: {session_id!r}")
    path = segment_root() / f"actorhub-{session_id}"
    path.mkdir(mode=0o700, exist_ok=True)
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
