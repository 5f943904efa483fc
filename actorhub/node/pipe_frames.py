"""Framing of the pipes between a node agent and its zygote: a 4-byte big-endian length, then
one ZygoteCommand or ZygoteEvent message. Standard library only: the zygote imports it before
anything heavy (zygote.py)."""

from __future__ import annotations

import os
import struct

_HEADER = struct.Struct(">I")
# A command or event is a few hundred bytes; anything near this is a corrupt stream.
MAX_FRAME = 16 * 1024 * 1024


def encode_frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameReader:
    """Splits a byte stream into frames; a pipe read may end in the middle of one."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ValueError(f"zygote pipe frame of {size} bytes: the stream is corrupt")
            end = _HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[_HEADER.size : end]))
            del self._buf[:end]
        return frames
