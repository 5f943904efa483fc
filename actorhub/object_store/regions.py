"""Free space in a node's arena: page-aligned regions, first fit from the lowest offset.

The arena is a sparse file whose pages are faulted in (allocated and zeroed by the kernel) on
first use and never given back, so first fit from the bottom is the policy: a region at a low
offset reuses pages an earlier object already paid for, and the arena's touched part grows
only as far as the peak of what is stored at once. Freed regions merge with free neighbours.
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Iterable
from typing import TypeVar

PAGE = mmap.PAGESIZE

_Key = TypeVar("_Key")


def page_round(size: int) -> int:
    """The bytes a region of `size` takes: whole pages, at least one (offsets stay aligned)."""
    return max(PAGE, (size + PAGE - 1) // PAGE * PAGE)


class FreeSpace:
    """The free blocks of an arena of `size` bytes. Not thread-safe: the store's lock guards it."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError(f"arena size must be a positive multiple of {PAGE}, not {size}")
        self.size = size
        self.used = 0
        self._starts: list[int] = [0]  # sorted, for first fit
        self._length: dict[int, int] = {0: size}  # free block start -> length
        self._start_of: dict[int, int] = {size: 0}  # free block end -> start, to merge on free

    def allocate(self, size: int) -> int | None:
        """The offset of a new region of `size` (a multiple of PAGE) bytes, or None if none fits."""
        for start in self._starts:
            length = self._length[start]
            if length >= size:
                self._remove(start)
                if length > size:
                    self._insert(start + size, length - size)
                self.used += size
                return start
        return None

    def free(self, start: int, size: int) -> None:
        self.used -= size
        end = start + size
        if start in self._start_of:  # a free block ends where this one starts
            before = self._start_of[start]
            self._remove(before)
            start = before
        after = self._length.get(end)
        if after is not None:
            self._remove(end)
            end += after
        self._insert(start, end - start)

    def largest(self) -> int:
        return max(self._length.values(), default=0)

    def blocks(self) -> list[tuple[int, int]]:
        """(start, length) of every free block, lowest first."""
        return [(start, self._length[start]) for start in self._starts]

    def victims_for(self, size: int, candidates: Iterable[tuple[_Key, int, int]]) -> list[_Key] | None:
        """Which candidates (key, start, length), taken in the given order, to free so `size` fits.

        A prefix of the candidates is freed in imagination until some merged block holds
        `size`; of those, only the ones inside the part of that block first fit would use are
        returned. None when even all of them would not make room; nothing changes either way.
        """
        length = dict(self._length)
        start_of = dict(self._start_of)
        taken: list[tuple[_Key, int, int]] = []
        for key, start, region_length in candidates:
            taken.append((key, start, region_length))
            block, end = start, start + region_length
            if block in start_of:
                block = start_of.pop(block)
                del length[block]
            if end in length:
                end += length.pop(end)
                del start_of[end]
            length[block], start_of[end] = end - block, block
            if end - block >= size:
                used = (block, block + size)
                return [k for k, s, n in taken if s < used[1] and s + n > used[0]]
        return None

    def _insert(self, start: int, length: int) -> None:
        bisect.insort(self._starts, start)
        self._length[start] = length
        self._start_of[start + length] = start

    def _remove(self, start: int) -> None:
        del self._starts[bisect.bisect_left(self._starts, start)]
        length = self._length.pop(start)
        del self._start_of[start + length]



class Region:
    """An allocated region: the object it holds and the readers that map it."""

    __slots__ = ("length", "live", "object_id", "offset", "pins")

    def __init__(self, object_id: str, offset: int, length: int) -> None:
        self.object_id = object_id
        self.offset = offset
        self.length = length
        self.pins: dict[str, int] = {}  # reader -> opens it has not released yet
        self.live = True  # the object's copy; False: kept only until its readers let go


class Regions:
    """The arena's regions and the readers' pins on them. The store's lock guards it.

    A region is reused only when it is both retired (its object freed, spilled, or moved)
    and unpinned: a reader's read-only array must never change under it.
    """

    def __init__(self, size: int) -> None:
        self.space = FreeSpace(size)
        self._by_offset: dict[int, Region] = {}

    def allocate(self, object_id: str, length: int) -> Region | None:
        offset = self.space.allocate(length)
        if offset is None:
            return None
        region = self._by_offset[offset] = Region(object_id, offset, length)
        return region

    def pin(self, region: Region, reader: str) -> None:
        region.pins[reader] = region.pins.get(reader, 0) + 1

    def unpin(self, object_id: str, offset: int, reader: str) -> bool:
        """Drop one pin of `reader` on the region at `offset`; False if it holds none there."""
        region = self._by_offset.get(offset)
        if region is None or region.object_id != object_id or reader not in region.pins:
            return False
        region.pins[reader] -= 1
        if not region.pins[reader]:
            del region.pins[reader]
            self._free_if_unused(region)
        return True

    def retire(self, region: Region) -> None:
        """The region no longer holds its object's copy: free it once no reader maps it."""
        region.live = False
        self._free_if_unused(region)

    def drop_reader(self, reader: str) -> int:
        """Drop every pin of `reader` (it died); returns how many it held."""
        dropped = 0
        for region in list(self._by_offset.values()):
            dropped += region.pins.pop(reader, 0)
            self._free_if_unused(region)
        return dropped

    def readers(self) -> set[str]:
        return {reader for region in self._by_offset.values() for reader in region.pins}

    def held_bytes(self) -> int:
        """Of the arena in use, what retired regions still pinned take."""
        return sum(region.length for region in self._by_offset.values() if not region.live)

    def _free_if_unused(self, region: Region) -> None:
        if not region.live and not region.pins and self._by_offset.get(region.offset) is region:
            del self._by_offset[region.offset]
            self.space.free(region.offset, region.length)
