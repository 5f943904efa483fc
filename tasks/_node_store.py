"""The node's object store: which segments exist, how much shared memory they take, spilling.

Accounting only, no transport: the node agent serves it, and processes on the node write and
map the segment files themselves (see _shm). Shared memory holds at most `capacity_bytes` of
sealed objects; to make room the least recently used ones move to files in `spill_dir`, and
`open` moves them back. Nothing is dropped for lack of room: an object that does not fit
(bigger than the capacity, or everything else busy) lives in the spill directory, and readers
map it from there.

File copies (spill, restore) run outside the lock, so one big copy does not stall every
other call; an entry in the middle of one is in a transitional state that `open` waits out.
Segment file names carry a serial number, so a file being written for an old incarnation
of an id can never be mistaken for (or unlink) a newer one.
"""

from __future__ import annotations

import builtins
import enum
import itertools
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from actorhub.tasks import _shm

from actorhub.exceptions import ObjectLostError

Where = Literal["shared memory", "spilled"]
SHARED_MEMORY: Where = "shared memory"
SPILLED: Where = "spilled"

# Ids become file names: nothing that could climb out of the directory or hide in it.
_SAFE_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}")


class ObjectNotInStoreError(ObjectLostError):
    """The node's store has no object with this id (never created, or freed)."""


class ObjectExistsError(ValueError):
    """An object with this id is already in the store: objects are immutable."""


@dataclass(frozen=True, slots=True)
class Location:
    object_id: str
    path: Path
    size: int
    where: Where


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    object_id: str
    size: int
    owner: str
    where: Where
    last_access: float  # time.time() of the last create or open


@dataclass(frozen=True, slots=True)
class StoreStats:
    capacity_bytes: int
    shm_bytes: int  # held or reserved in shared memory
    spilled_bytes: int
    num_objects: int
    num_spilled: int
    spills: int  # objects moved to disk since the store started
    restores: int  # and moved back


class _State(enum.Enum):
    CREATING = "creating"  # reserved; the writer has not sealed it yet
    RESIDENT = "resident"  # sealed, in shared memory
    SPILLING = "spilling"  # in shared memory, being copied to disk
    SPILLED = "spilled"  # on disk only
    RESTORING = "restoring"  # on disk, being copied back into shared memory


class _Entry:
    __slots__ = ("last_access", "object_id", "owner", "shm_path", "size", "spill_path", "state")

    def __init__(self, object_id: str, size: int, owner: str) -> None:
        self.object_id = object_id
        self.size = size
        self.owner = owner
        self.state = _State.CREATING
        self.shm_path: Path | None = None
        self.spill_path: Path | None = None
        self.last_access = time.time()

    def charge(self) -> tuple[int, int, int]:
        """What this entry counts for: (shared memory, of which being freed, spilled).

        A file counts from the moment it is reserved or being copied until it is unlinked.
        """
        size = self.size
        return (
            size if self.shm_path is not None else 0,
            size if self.state is _State.SPILLING else 0,
            size if self.spill_path is not None else 0,
        )

    @property
    def readable(self) -> tuple[Path, Where]:
        if self.shm_path is not None and self.state is not _State.RESTORING:
            return self.shm_path, SHARED_MEMORY
        assert self.spill_path is not None
        return self.spill_path, SPILLED


class NodeObjectStore:
    def __init__(self, capacity_bytes: int, shm_dir: Path, spill_dir: Path) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"object store capacity must be positive, not {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.shm_dir = Path(shm_dir)
        self.spill_dir = Path(spill_dir)
        self.shm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spill_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # an entry left a transitional state
        self._entries: dict[str, _Entry] = {}
        self._resident: OrderedDict[str, _Entry] = OrderedDict()  # spill candidates, LRU first
        self._shm_bytes = 0
        self._freeing = 0  # of _shm_bytes, what spills under way are about to free
        self._spilled_bytes = 0
        self._spills = 0
        self._restores = 0
        self._serial = itertools.count()

    # -- writing ------------------------------------------------------------------------------
    def create(self, object_id: str, serialized: _shm.Serialized, owner: str) -> Location:
        """Write `serialized` as a new sealed object (reserve, write, seal in one call)."""
        location = self.reserve(object_id, serialized.total_size, owner)
        try:
            _shm.write_segment(location.path, serialized)
        except BaseException:
            self.delete(object_id)
            raise
        return self.seal(object_id)

    def reserve(self, object_id: str, size: int, owner: str) -> Location:
        """Make room for an object of `size` bytes; the caller writes the segment at the path.

        For writers in other processes: reserve (through the agent), `_shm.write_segment` to
        the returned path, then `seal`. The object is invisible to `open` until sealed.
        """
        if not _SAFE_ID.fullmatch(object_id):
            raise ValueError(f"object id not usable as a file name: {object_id!r}")
        entry = _Entry(object_id, size, owner)
        with self._lock:
            if object_id in self._entries:
                raise ObjectExistsError(f"object {object_id} is already in the store")
            victims = self._make_room(size)
            if victims is None:
                entry.spill_path = self._new_path(self.spill_dir, object_id)
            else:
                entry.shm_path = self._new_path(self.shm_dir, object_id)
            self._entries[object_id] = entry
            self._add_charge(entry, 1)
            path, where = entry.readable
        self._spill(victims or [])
        return Location(object_id, path, size, where)

    def seal(self, object_id: str) -> Location:
        """Mark a reserved object written; its size is taken from the file."""
        with self._lock:
            entry = self._entries.get(object_id)
            if entry is None:
                raise ObjectNotInStoreError(f"object {object_id} was freed before it was sealed", object_id=object_id)
            if entry.state is not _State.CREATING:
                raise ObjectExistsError(f"object {object_id} is already sealed")
            path, where = entry.readable
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                self._forget(entry)
                message = f"object {object_id} was sealed but never written"
                raise ObjectNotInStoreError(message, object_id=object_id) from None
            self._add_charge(entry, -1)
            entry.size = size
            entry.state = _State.RESIDENT if where == SHARED_MEMORY else _State.SPILLED
            self._add_charge(entry, 1)
            if entry.state is _State.RESIDENT:
                self._resident[object_id] = entry
            self._settled.notify_all()
        return Location(object_id, path, size, where)

    # -- reading ------------------------------------------------------------------------------
    def open(self, object_id: str, timeout: float | None = None) -> Path:
        """The path of the object's segment to map, restoring it to shared memory if spilled.

        The path may vanish before the caller maps it (the object spilled again in between):
        FileNotFoundError from the mapping means ask again. A mapping once made stays valid.
        An object that cannot fit in shared memory is mapped from its spill file.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
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
                assert entry.shm_path is not None
                return entry.shm_path
            spill_path = entry.spill_path
            assert spill_path is not None
            victims = self._make_room(entry.size)
            if victims is None:
                return spill_path
            shm_path = self._new_path(self.shm_dir, object_id)
            self._move(entry, _State.RESTORING, shm_path, spill_path)
        self._spill(victims)
        return self._restore(entry, spill_path, shm_path)

    def read(self, object_id: str, timeout: float | None = None) -> Any:
        """Open and map the object in this process (zero-copy buffers, read-only)."""
        for _ in range(8):
            path = self.open(object_id, timeout)
            try:
                return _shm.read_segment(path)
            except FileNotFoundError:
                continue  # moved between open and the mapping: ask where it is now
        raise ObjectNotInStoreError(f"object {object_id} kept moving while being read", object_id=object_id)

    def _restore(self, entry: _Entry, spill_path: Path, shm_path: Path) -> Path:
        try:
            shutil.copyfile(spill_path, shm_path)
        except OSError:
            _shm.unlink_quietly(shm_path)
            with self._lock:
                if self._entries.get(entry.object_id) is entry:
                    # No room on /dev/shm after all: leave it on disk, readers map it there.
                    self._move(entry, _State.SPILLED, None, spill_path)
                    self._settled.notify_all()
                    return spill_path
            raise ObjectNotInStoreError(
                f"object {entry.object_id} was freed while being restored", object_id=entry.object_id
            ) from None
        with self._lock:
            if self._entries.get(entry.object_id) is not entry:
                _shm.unlink_quietly(shm_path)
                raise ObjectNotInStoreError(
                    f"object {entry.object_id} was freed while being restored", object_id=entry.object_id
                )
            self._move(entry, _State.RESIDENT, shm_path, None)
            self._resident[entry.object_id] = entry
            self._restores += 1
            self._settled.notify_all()
        _shm.unlink_quietly(spill_path)
        return shm_path

    # -- spilling -------------------------------------------------------------------------------
    def _make_room(self, size: int) -> builtins.list[_Entry] | None:
        """Under the lock: pick and mark LRU objects to spill so `size` more bytes fit.

        None when they cannot fit at all; then nothing is marked.
        """
        excess = self._shm_bytes - self._freeing + size - self.capacity_bytes
        if excess <= 0:
            return []
        if size > self.capacity_bytes:
            return None
        victims: list[_Entry] = []
        for entry in self._resident.values():
            if excess <= 0:
                break
            victims.append(entry)
            excess -= entry.size
        if excess > 0:
            return None  # the rest is being created, spilled or restored
        for entry in victims:
            del self._resident[entry.object_id]
            self._move(entry, _State.SPILLING, entry.shm_path, self._new_path(self.spill_dir, entry.object_id))
        return victims

    def _spill(self, victims: builtins.list[_Entry]) -> None:
        # Copies with sendfile(2) (shutil.copyfile on Linux): the bytes never enter Python.
        for entry in victims:
            shm_path, spill_path = entry.shm_path, entry.spill_path
            assert shm_path is not None and spill_path is not None
            try:
                shutil.copyfile(shm_path, spill_path)
                copied = True
            except OSError:
                copied = False
            with self._lock:
                if self._entries.get(entry.object_id) is not entry:
                    garbage = [shm_path, spill_path]  # freed meanwhile; delete() dropped its charge
                elif copied:
                    self._move(entry, _State.SPILLED, None, spill_path)
                    self._spills += 1
                    garbage = [shm_path]
                else:
                    # Disk full or the like: keep it in shared memory, over capacity, not lost.
                    self._move(entry, _State.RESIDENT, shm_path, None)
                    self._resident[entry.object_id] = entry
                    self._resident.move_to_end(entry.object_id, last=False)
                    garbage = [spill_path]
                self._settled.notify_all()
            # Readers that mapped the shared-memory file keep its pages; new ones get the spill.
            for path in garbage:
                _shm.unlink_quietly(path)

    # -- freeing --------------------------------------------------------------------------------
    def delete(self, object_id: str) -> bool:
        """Free the object; False if it was not here. Existing mappings stay valid."""
        with self._lock:
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

    def _forget(self, entry: _Entry) -> builtins.list[Path]:
        """Under the lock: drop the entry and its charge; returns the files to unlink."""
        del self._entries[entry.object_id]
        self._resident.pop(entry.object_id, None)
        self._add_charge(entry, -1)
        # A thread copying this entry's files sees it gone and cleans up behind itself.
        self._settled.notify_all()
        return [p for p in (entry.shm_path, entry.spill_path) if p is not None]

    # -- bookkeeping ----------------------------------------------------------------------------
    def _move(self, entry: _Entry, state: _State, shm_path: Path | None, spill_path: Path | None) -> None:
        """Under the lock: change an entry's state and files, keeping the byte counts right."""
        self._add_charge(entry, -1)
        entry.state, entry.shm_path, entry.spill_path = state, shm_path, spill_path
        self._add_charge(entry, 1)

    def _add_charge(self, entry: _Entry, sign: int) -> None:
        shm, freeing, spilled = entry.charge()
        self._shm_bytes += sign * shm
        self._freeing += sign * freeing
        self._spilled_bytes += sign * spilled

    def _new_path(self, directory: Path, object_id: str) -> Path:
        return directory / f"{object_id}.{next(self._serial)}"

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                capacity_bytes=self.capacity_bytes,
                shm_bytes=self._shm_bytes,
                spilled_bytes=self._spilled_bytes,
                num_objects=len(self._entries),
                num_spilled=sum(1 for e in self._entries.values() if e.readable[1] == SPILLED),
                spills=self._spills,
                restores=self._restores,
            )

    def list(self) -> builtins.list[ObjectInfo]:
        """Every object, for `actorhub memory`, least recently used first."""
        with self._lock:
            return [
                ObjectInfo(e.object_id, e.size, e.owner, e.readable[1], e.last_access)
                for e in sorted(self._entries.values(), key=lambda e: e.last_access)
            ]
