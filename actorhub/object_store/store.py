"""The node's object store: which objects exist, where in the arena, who maps them, spilling.

Accounting only, no transport: the node agent serves it, and processes on the node write and
map segments themselves (see _shm). Objects live in page-aligned regions of one arena file per
node (`capacity_bytes` long, sparse), placed first fit from the bottom (_regions), so a freed
region is reused without the kernel faulting and zeroing fresh pages. To make room the least
recently used objects move to files in `spill_dir`, and `open` moves them back. Nothing is
dropped for lack of room: an object that does not fit (bigger than the arena, or no contiguous
room even after spilling) lives in a spill file, and readers map it from there.

Readers pin regions: `open` pins the object's region for the reader, which releases the pin
once its mapping is gone (the arrays built on it collected). A pinned region is never reused,
or a reader's read-only array would change under it: deleting or spilling a pinned object
takes it out of the table (or moves it to disk) at once and frees the region with the last pin.

File copies (spill, restore) run outside the lock, so one big copy does not stall every other
call; an entry in the middle of one is in a transitional state that `open` waits out, and the
copying thread alone decides what becomes of the region it copies from or to.
"""

from __future__ import annotations

import builtins
import collections
import enum
import functools
import itertools
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from actorhub.exceptions import ObjectLostError
from actorhub.object_store import shm as _shm
from actorhub.object_store.regions import Region, Regions, page_round

Where = Literal["shared memory", "spilled"]
SHARED_MEMORY: Where = "shared memory"
SPILLED: Where = "spilled"
ARENA_NAME = "arena"
# The reader name of this process's own `read`s.
LOCAL_READER = "local"

# Ids become file names: nothing that could climb out of the directory or hide in it.
_SAFE_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}")


class ObjectNotInStoreError(ObjectLostError):
    """The node's store has no object with this id (never created, or freed)."""


class ObjectExistsError(ValueError):
    """An object with this id is already in the store: objects are immutable."""


@dataclass(frozen=True, slots=True)
class Location:
    """A segment of `size` bytes at `offset` of `path`: a region of the arena, or a spill file."""

    object_id: str
    path: Path
    size: int
    where: Where
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    object_id: str
    size: int
    owner: str
    where: Where
    last_access: float  # time.time() of the last create or open
    is_copy: bool = False  # pulled from another node's store (a cache the autoscaler may drop with its node)


@dataclass(frozen=True, slots=True)
class StoreStats:
    capacity_bytes: int
    shm_bytes: int  # of the arena in regions (whole pages), those kept for readers included
    held_bytes: int  # of shm_bytes, regions of freed or spilled objects that readers still map
    spilled_bytes: int
    num_objects: int
    num_spilled: int
    spills: int  # objects moved to disk since the store started
    restores: int  # and moved back


class _State(enum.Enum):
    CREATING = "creating"  # reserved; the writer has not sealed it yet
    RESIDENT = "resident"  # sealed, in the arena
    SPILLING = "spilling"  # in the arena, being copied to disk
    SPILLED = "spilled"  # on disk only
    RESTORING = "restoring"  # on disk, being copied back into the arena


class _Entry:
    __slots__ = ("is_copy", "last_access", "object_id", "owner", "region", "size", "spill_path", "state")

    def __init__(self, object_id: str, size: int, owner: str, is_copy: bool = False) -> None:
        self.object_id = object_id
        self.size = size
        self.owner = owner
        self.is_copy = is_copy  # pulled from another node's store: dropped, not spilled
        self.state = _State.CREATING
        self.region: Region | None = None
        self.spill_path: Path | None = None
        self.last_access = time.time()

    @property
    def where(self) -> Where:
        if self.spill_path is not None and (self.region is None or self.state is _State.RESTORING):
            return SPILLED
        return SHARED_MEMORY


class NodeObjectStore:
    def __init__(self, capacity_bytes: int, shm_dir: Path, spill_dir: Path) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"object store capacity must be positive, not {capacity_bytes}")
        self.capacity_bytes = page_round(capacity_bytes)
        self.shm_dir = Path(shm_dir)
        self.spill_dir = Path(spill_dir)
        _shm.private_dir(self.shm_dir, "shared-memory directory")
        _shm.private_dir(self.spill_dir, "spill directory")
        # Not pre-faulted: pages are allocated as objects first land on them, then reused.
        _shm.unlink_quietly(self.shm_dir / ARENA_NAME)
        self._arena = _shm.Arena.create(self.shm_dir / ARENA_NAME, self.capacity_bytes)
        self.arena_path = self._arena.path
        self._regions = Regions(self.capacity_bytes)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # an entry left a transitional state
        self._entries: dict[str, _Entry] = {}
        self._resident: OrderedDict[str, _Entry] = OrderedDict()  # spill candidates, LRU first
        # Mappings of this process's own reads that are gone; appended by finalizers, which
        # may run inside any locked section of this thread, so they never take the lock.
        self._released: collections.deque[tuple[str, int]] = collections.deque()
        self._spilled_bytes = 0
        self._spills = 0
        self._restores = 0
        self._serial = itertools.count()

    # -- writing ------------------------------------------------------------------------------
    def create(self, object_id: str, serialized: _shm.Serialized, owner: str) -> Location:
        """Write `serialized` as a new sealed object (reserve, write, seal in one call)."""
        location = self.reserve(object_id, serialized.total_size, owner)
        try:
            if location.where == SHARED_MEMORY:
                self._arena.write(location.offset, serialized)
            else:
                _shm.write_segment(location.path, serialized)
        except BaseException:
            self.delete(object_id)
            raise
        return self.seal(object_id)

    def reserve(self, object_id: str, size: int, owner: str, *, is_copy: bool = False) -> Location:
        """Make room for an object of `size` bytes; the caller writes the segment there.

        For writers in other processes: reserve (through the agent), write the segment at the
        returned location (`_shm.Arena.write` at its offset in the arena, or
        `_shm.write_segment` to a spill file), then `seal`. The object is invisible to `open`
        until sealed; only its writer may delete it before (or the sweep, once it is dead).
        """
        if not _SAFE_ID.fullmatch(object_id):
            raise ValueError(f"object id not usable as a file name: {object_id!r}")
        entry = _Entry(object_id, size, owner, is_copy)
        with self._lock:
            self._drain_released()
            if object_id in self._entries:
                raise ObjectExistsError(f"object {object_id} is already in the store")
            self._entries[object_id] = entry
        try:
            region = self._find_room(entry)
        except BaseException:
            self._abandon(entry, None)
            raise
        with self._lock:
            if self._entries.get(object_id) is not entry:
                raise ObjectNotInStoreError(f"object {object_id} was freed while being reserved", object_id=object_id)
            if region is None:
                self._set_spill_path(entry, self._new_spill_path(object_id))
            return self._location(entry)

    def seal(self, object_id: str, reader: str = "") -> Location:
        """Mark a reserved object written; its size is the one its segment's header declares.

        With `reader` (a writer that reads its own puts), the region is also pinned for it, as
        `open` would: its reads then need no OpenObject.
        """
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None:
                raise ObjectNotInStoreError(f"object {object_id} was freed before it was sealed", object_id=object_id)
            if entry.state is not _State.CREATING:
                raise ObjectExistsError(f"object {object_id} is already sealed")
            try:
                if entry.region is not None:
                    size = self._arena.segment_size(entry.region.offset, entry.region.length)
                else:
                    assert entry.spill_path is not None
                    size = os.stat(entry.spill_path).st_size
            except (FileNotFoundError, _shm.CorruptSegmentError):
                garbage = self._forget(entry)
            else:
                if entry.spill_path is not None:
                    self._spilled_bytes += size - entry.size
                entry.size = size
                if entry.region is not None:
                    entry.state = _State.RESIDENT
                    self._resident[object_id] = entry
                    if reader:
                        self._regions.pin(entry.region, reader)
                else:
                    entry.state = _State.SPILLED
                self._settled.notify_all()
                return self._location(entry)
        for path in garbage:
            _shm.unlink_quietly(path)
        raise ObjectNotInStoreError(f"object {object_id} was sealed but never written", object_id=object_id)

    # -- reading ------------------------------------------------------------------------------
    def open(self, object_id: str, reader: str, timeout: float | None = None) -> Location:
        """Where to map the object, restoring it to the arena if spilled; pins it for `reader`.

        A location in the arena stays valid until `reader` releases it (`release`, once per
        open). A spill file (an object that cannot fit in the arena) needs no release, but may
        vanish before the caller maps it (restored or freed in between): FileNotFoundError
        from the mapping means ask again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drain_released()
            while True:
                entry = self._entries.get(object_id)
                if entry is None:
                    raise ObjectNotInStoreError(f"object {object_id} is not in this node's store", object_id=object_id)
                state = entry.state
                if state is _State.RESIDENT or state is _State.SPILLED:
                    break
                # Being created, spilled or restored by another thread: wait for the outcome.
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"object {object_id} stayed {state.value} for {timeout} s")
                self._settled.wait(remaining)
            entry.last_access = time.time()
            if state is _State.RESIDENT:
                self._resident.move_to_end(object_id)
                return self._pin(entry, reader)
            entry.state = _State.RESTORING  # other readers wait for the outcome
        return self._restore(entry, reader)

    def read(self, object_id: str, timeout: float | None = None) -> Any:
        """Open and map the object in this process (zero-copy buffers, read-only)."""
        for _ in range(8):
            location = self.open(object_id, LOCAL_READER, timeout)
            if location.where == SHARED_MEMORY:
                pin = (object_id, location.offset)
                return self._arena.read(location.offset, location.size, functools.partial(self._released.append, pin))
            try:
                return _shm.read_segment(location.path)
            except FileNotFoundError:
                continue  # moved between open and the mapping: ask where it is now
        raise ObjectNotInStoreError(f"object {object_id} kept moving while being read", object_id=object_id)

    def release(self, object_id: str, offset: int, reader: str) -> bool:
        """Drop one pin `reader` holds on the object's region at `offset`; False if it held none."""
        with self._lock:
            self._drain_released()
            return self._regions.unpin(object_id, offset, reader)

    def drop_reader(self, reader: str) -> int:
        """Drop every pin of a reader that died; returns how many it held."""
        with self._lock:
            return self._regions.drop_reader(reader)

    def readers(self) -> set[str]:
        with self._lock:
            return self._regions.readers()

    def _restore(self, entry: _Entry, reader: str) -> Location:
        """Outside the lock, `entry` RESTORING: back into the arena, or mapped from its spill file."""
        spill_path = entry.spill_path
        assert spill_path is not None
        try:
            region = self._find_room(entry)  # raises if the entry was freed meanwhile
        except BaseException:
            self._abandon(entry, _State.SPILLED)
            raise
        copied = False
        if region is not None:
            try:
                _shm.copy_range(spill_path, 0, self.arena_path, region.offset, entry.size, create=False)
                copied = True
            except OSError:
                pass  # no room on /dev/shm after all: readers map the spill file
        with self._lock:
            self._settled.notify_all()
            if region is not None and not copied:
                entry.region = None
                self._regions.retire(region)
            if self._entries.get(entry.object_id) is not entry:
                if region is not None and copied:
                    self._regions.retire(region)
                raise ObjectNotInStoreError(
                    f"object {entry.object_id} was freed while being restored", object_id=entry.object_id
                )
            if region is None or not copied:
                entry.state = _State.SPILLED
                return self._location(entry)
            entry.state = _State.RESIDENT
            self._set_spill_path(entry, None)
            self._resident[entry.object_id] = entry
            self._restores += 1
            location = self._pin(entry, reader)
        _shm.unlink_quietly(spill_path)
        return location

    def _abandon(self, entry: _Entry, state: _State | None) -> None:
        """Making room failed: the entry goes back to `state`, or is dropped if None."""
        with self._lock:
            if self._entries.get(entry.object_id) is entry:
                if state is None:
                    self._forget(entry)  # no spill file yet: nothing to unlink
                else:
                    entry.state = state
                    self._settled.notify_all()

    # -- room and spilling ----------------------------------------------------------------------
    def _find_room(self, entry: _Entry) -> Region | None:
        """Outside the lock: a region for `entry`, spilling LRU objects to make one; None if no
        contiguous room can be made. The region is the entry's from the moment it exists."""
        length = page_round(entry.size)
        while True:
            with self._lock:
                if self._entries.get(entry.object_id) is not entry:
                    raise ObjectNotInStoreError(
                        f"object {entry.object_id} was freed while room was made for it", object_id=entry.object_id
                    )
                if length > self.capacity_bytes:
                    return None
                region = self._regions.allocate(entry.object_id, length)
                if region is not None:
                    try:
                        # Reused pages hold an old segment: a seal with nothing written must see none.
                        self._arena.clear_header(region.offset)
                    except BaseException:
                        self._regions.retire(region)
                        raise
                    entry.region = region
                    return region
                victims, dropped = self._pick_victims(length)
                if not victims and not dropped:
                    return None  # what is left is pinned, or in the middle of a copy
            if victims and not self._spill(victims) and not dropped:
                return None  # the disk refused them all: no room can be made now
            # Then try again: another call may have taken the room meanwhile.

    def _pick_victims(self, length: int) -> tuple[builtins.list[_Entry], bool]:
        """Under the lock: mark the LRU objects whose regions, freed, make `length` bytes
        contiguous, to spill; copies among them are dropped at once (True if any was): their
        readers' nodes pull them again when asked.

        Pinned ones are left: spilling them would free nothing until their readers let go.
        """
        candidates = (
            (entry, entry.region.offset, entry.region.length)
            for entry in self._resident.values()
            if entry.region is not None and not entry.region.pins
        )
        victims = self._regions.space.victims_for(length, candidates) or []
        copies = [entry for entry in victims if entry.is_copy]
        for entry in copies:
            self._forget(entry)  # no spill file: nothing to unlink
        victims = [entry for entry in victims if not entry.is_copy]
        for entry in victims:
            del self._resident[entry.object_id]
            entry.state = _State.SPILLING
            self._set_spill_path(entry, self._new_spill_path(entry.object_id))
        return victims, bool(copies)

    def _spill(self, victims: builtins.list[_Entry]) -> bool:
        """Copy the victims to disk (sendfile: the bytes never enter Python); False if none went."""
        moved = False
        for entry in victims:
            region, spill_path = entry.region, entry.spill_path
            assert region is not None and spill_path is not None
            try:
                _shm.copy_range(self.arena_path, region.offset, spill_path, 0, entry.size, create=True)
                copied = True
            except OSError:
                copied = False
            with self._lock:
                garbage: Path | None = None
                if self._entries.get(entry.object_id) is not entry:
                    self._regions.retire(region)  # freed meanwhile; delete() dropped the rest
                    garbage = spill_path
                    moved = True
                elif copied:
                    entry.state, entry.region = _State.SPILLED, None
                    self._regions.retire(region)
                    self._spills += 1
                    moved = True
                else:
                    # Disk full or the like: keep it in the arena, not lost.
                    entry.state = _State.RESIDENT
                    self._set_spill_path(entry, None)
                    self._resident[entry.object_id] = entry
                    self._resident.move_to_end(entry.object_id, last=False)
                self._settled.notify_all()
            if garbage is not None:
                _shm.unlink_quietly(garbage)
        return moved

    # -- freeing --------------------------------------------------------------------------------
    def delete(self, object_id: str) -> bool:
        """Free the object; False if it was not here. Existing mappings stay valid."""
        with self._lock:
            self._drain_released()
            entry = self._entries.get(object_id)
            if entry is None:
                return False
            paths = self._forget(entry)
        for path in paths:
            _shm.unlink_quietly(path)
        return True

    def delete_owned_by(self, owner: str) -> builtins.list[str]:
        """Free every object of an owner that died; returns their ids."""
        with self._lock:
            ids = [e.object_id for e in self._entries.values() if e.owner == owner]
        return [object_id for object_id in ids if self.delete(object_id)]

    def clear(self) -> None:
        with self._lock:
            ids = builtins.list(self._entries)
        for object_id in ids:
            self.delete(object_id)

    def close(self) -> None:
        """Clear the store and let go of the arena (its file goes with the segment directory)."""
        self.clear()
        self._arena.close()

    def _forget(self, entry: _Entry) -> builtins.list[Path]:
        """Under the lock: drop the entry; returns the files to unlink."""
        del self._entries[entry.object_id]
        self._resident.pop(entry.object_id, None)
        spill_path = entry.spill_path
        self._set_spill_path(entry, None)
        if entry.region is not None and entry.state not in (_State.SPILLING, _State.RESTORING):
            self._regions.retire(entry.region)
        # A thread copying this entry's region sees it gone and retires the region itself.
        self._settled.notify_all()
        return [spill_path] if spill_path is not None else []

    # -- bookkeeping ----------------------------------------------------------------------------
    def _pin(self, entry: _Entry, reader: str) -> Location:
        assert entry.region is not None
        self._regions.pin(entry.region, reader)
        return self._location(entry)

    def _drain_released(self) -> None:
        while self._released:
            object_id, offset = self._released.popleft()
            self._regions.unpin(object_id, offset, LOCAL_READER)

    def _set_spill_path(self, entry: _Entry, path: Path | None) -> None:
        self._spilled_bytes += entry.size * ((path is not None) - (entry.spill_path is not None))
        entry.spill_path = path

    def _location(self, entry: _Entry) -> Location:
        if entry.where == SHARED_MEMORY and entry.region is not None:
            return Location(entry.object_id, self.arena_path, entry.size, SHARED_MEMORY, entry.region.offset)
        assert entry.spill_path is not None
        return Location(entry.object_id, entry.spill_path, entry.size, SPILLED)

    def _new_spill_path(self, object_id: str) -> Path:
        # A serial number: a file being written for an old incarnation of an id can never be
        # mistaken for (or unlink) a newer one.
        return self.spill_dir / f"{object_id}.{next(self._serial)}"

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> StoreStats:
        with self._lock:
            self._drain_released()
            return StoreStats(
                capacity_bytes=self.capacity_bytes,
                shm_bytes=self._regions.space.used,
                held_bytes=self._regions.held_bytes(),
                spilled_bytes=self._spilled_bytes,
                num_objects=len(self._entries),
                num_spilled=sum(1 for e in self._entries.values() if e.where == SPILLED),
                spills=self._spills,
                restores=self._restores,
            )

    def list(self) -> builtins.list[ObjectInfo]:
        """Every object, for `actorhub memory`, least recently used first."""
        with self._lock:
            return [
                ObjectInfo(e.object_id, e.size, e.owner, e.where, e.last_access, e.is_copy)
                for e in sorted(self._entries.values(), key=lambda e: e.last_access)
            ]
