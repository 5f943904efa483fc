"""The object store's segment format (_shm) and the node's accounting and spilling (_node_store).

In-process only, no cluster: every test works in its own /dev/shm session directory.
"""

from __future__ import annotations

import gc
import mmap
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actorhub.exceptions import ObjectLostError
from actorhub.object_store import regions as _regions
from actorhub.object_store import shm as _shm
from actorhub.object_store import store as _node_store
from actorhub.object_store.regions import FreeSpace
from actorhub.object_store.store import NodeObjectStore, ObjectExistsError, ObjectNotInStoreError

MiB = 1 << 20


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    session_id = f"test-{uuid.uuid4().hex[:12]}"
    path = _shm.segment_dir(session_id)
    try:
        yield path
    finally:
        _shm.remove_segment_dir(session_id)
    assert not path.exists()


@pytest.fixture
def spill_dir(tmp_path: Path) -> Path:
    return tmp_path / "spill"


def make_store(shm_dir: Path, spill_dir: Path, capacity: int) -> NodeObjectStore:
    return NodeObjectStore(capacity, shm_dir, spill_dir)


def put(store: NodeObjectStore, object_id: str, value: Any, owner: str = "driver") -> _node_store.Location:
    return store.create(object_id, _shm.serialize(value), owner)


def array(seed: int, nbytes: int = MiB) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.arange(nbytes // 8, dtype=np.int64) + seed


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def mapping_of(arr: np.ndarray[Any, Any]) -> mmap.mmap:
    base: Any = arr
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview), f"array is backed by {type(base).__name__}, not a view of a mapping"
    assert isinstance(base.obj, mmap.mmap)
    return base.obj


# -- the segment format -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "text",
        b"",
        b"raw bytes" * 50_000,
        bytearray(b"mutable") * 1000,
        [1, 2.5, "three", (4,)],
        {"nested": {"array": np.arange(1000), "list": [np.ones((3, 4)), "x"]}, "empty": np.empty(0)},
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(100)[::3],  # not contiguous: travels in band
        [np.zeros(5, dtype=np.uint8), np.zeros(7, dtype=np.float32), np.array(["a", "bc"])],
    ],
)
def test_round_trip(shm_dir: Path, value: Any) -> None:
    serialized = _shm.serialize(value)
    path = shm_dir / "object"
    assert _shm.write_segment(path, serialized) == serialized.total_size == path.stat().st_size
    assert path.stat().st_mode & 0o777 == 0o600
    assert_same(_shm.read_segment(path), value)
    assert_same(_shm.deserialize(serialized), value)


def test_buffers_are_aligned_and_out_of_band(shm_dir: Path) -> None:
    value = {"a": np.arange(1001, dtype=np.int8), "b": np.arange(10_000.0), "c": np.arange(3, dtype=np.int16)}
    serialized = _shm.serialize(value)
    assert len(serialized.buffers) == 3
    assert len(serialized.inband) < 1000  # the array bytes are not in the pickle stream
    assert all(offset % 64 == 0 for offset in serialized.offsets)
    _shm.write_segment(shm_dir / "object", serialized)
    loaded = _shm.read_segment(shm_dir / "object")
    assert all(arr.ctypes.data % 64 == 0 for arr in loaded.values())


def test_numpy_read_is_zero_copy_and_read_only(shm_dir: Path) -> None:
    original = np.arange(MiB, dtype=np.float64).reshape(1024, 1024)
    path = shm_dir / "array"
    _shm.write_segment(path, _shm.serialize(original))
    loaded = _shm.read_segment(path)
    assert np.array_equal(loaded, original)
    mapping = mapping_of(loaded)
    assert np.shares_memory(loaded, np.frombuffer(mapping, dtype=np.uint8))
    assert not loaded.flags.writeable
    assert not loaded.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        loaded[0, 0] = 1.0
    with pytest.raises(ValueError):
        loaded += 1


def test_mapping_outlives_the_file_and_is_released_with_the_array(shm_dir: Path) -> None:
    original = np.arange(4 * MiB // 8, dtype=np.int64)
    path = shm_dir / "array"
    _shm.write_segment(path, _shm.serialize({"arr": original}))
    released = threading.Event()
    loaded = _shm.read_segment(path, on_release=released.set)["arr"]
    os.unlink(path)  # what delete and spill do
    gc.collect()
    assert not released.is_set()
    assert np.array_equal(loaded, original)
    assert int(loaded[-1]) == len(original) - 1
    del loaded
    gc.collect()
    assert released.is_set()


def test_a_value_without_buffers_releases_its_mapping_at_once(shm_dir: Path) -> None:
    _shm.write_segment(shm_dir / "plain", _shm.serialize({"a": 1}))
    released = threading.Event()
    assert _shm.read_segment(shm_dir / "plain", on_release=released.set) == {"a": 1}
    gc.collect()
    assert released.is_set()


def test_write_refuses_an_existing_file(shm_dir: Path) -> None:
    path = shm_dir / "object"
    _shm.write_segment(path, _shm.serialize(1))
    with pytest.raises(FileExistsError):
        _shm.write_segment(path, _shm.serialize(2))
    assert _shm.read_segment(path) == 1


def test_corrupt_segments_are_refused(shm_dir: Path) -> None:
    (shm_dir / "short").write_bytes(b"abc")
    (shm_dir / "alien").write_bytes(b"x" * 100)
    good = shm_dir / "good"
    _shm.write_segment(good, _shm.serialize(np.arange(100)))
    truncated = shm_dir / "truncated"
    truncated.write_bytes(good.read_bytes()[:-8])
    for name in ("short", "alien", "truncated"):
        with pytest.raises(_shm.CorruptSegmentError):
            _shm.read_segment(shm_dir / name)


def test_segment_dir_is_private_and_removable() -> None:
    session_id = f"test-{uuid.uuid4().hex[:12]}"
    path = _shm.segment_dir(session_id)
    try:
        assert path.parent == (Path("/dev/shm") if Path("/dev/shm").is_dir() else path.parent)
        assert path.name == f"actorhub-{session_id}"
        assert path.stat().st_mode & 0o777 == 0o700
        assert _shm.segment_dir(session_id) == path  # idempotent
        (path / "leftover").write_bytes(b"x")
    finally:
        _shm.remove_segment_dir(session_id)
    assert not path.exists()
    _shm.remove_segment_dir(_shm.segment_dir(session_id))  # by path, as well
    assert not path.exists()
    for bad in ("", "../etc", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            _shm.segment_dir(bad)


def test_reading_100_mb_does_not_copy(shm_dir: Path) -> None:
    path = shm_dir / "big"
    _shm.write_segment(path, _shm.serialize(np.ones(100 * 1000 * 1000 // 8)))
    times = []
    for _ in range(10):
        start = time.perf_counter()
        loaded = _shm.read_segment(path)
        times.append(time.perf_counter() - start)
        del loaded
    # Copying 100 MB takes tens of milliseconds; mapping it takes tens of microseconds.
    assert sorted(times)[len(times) // 2] < 0.005


# -- the arena's free space -------------------------------------------------------------------

PAGE = _regions.PAGE


def test_free_space_is_first_fit_from_the_bottom_and_merges_neighbours() -> None:
    space = FreeSpace(16 * PAGE)
    a, b, c = (space.allocate(n * PAGE) for n in (2, 3, 4))
    assert (a, b, c) == (0, 2 * PAGE, 5 * PAGE) and space.used == 9 * PAGE
    assert space.allocate(8 * PAGE) is None  # 7 pages left
    space.free(0, 2 * PAGE)
    assert space.allocate(PAGE) == 0  # the lowest hole first, not the big block at the top
    space.free(2 * PAGE, 3 * PAGE)  # merges with the free page 1 before it
    assert space.blocks() == [(PAGE, 4 * PAGE), (9 * PAGE, 7 * PAGE)]
    space.free(5 * PAGE, 4 * PAGE)  # bridges both: one block from page 1 to the end
    assert space.blocks() == [(PAGE, 15 * PAGE)] and space.used == PAGE
    space.free(0, PAGE)
    assert space.blocks() == [(0, 16 * PAGE)] and space.used == 0 and space.largest() == 16 * PAGE
    assert _regions.page_round(1) == _regions.page_round(PAGE) == PAGE
    assert _regions.page_round(PAGE + 1) == 2 * PAGE


def test_victims_are_the_lru_prefix_that_makes_room_where_first_fit_would_use_it() -> None:
    space = FreeSpace(10 * PAGE)
    regions = {name: (space.allocate(2 * PAGE), 2 * PAGE) for name in "abcde"}  # full
    assert space.victims_for(PAGE, []) is None
    lru = [(name, *regions[name]) for name in "dbc"]
    # d alone frees 2 pages: enough for 2, so only d; b and c are not needed.
    assert space.victims_for(2 * PAGE, lru) == ["d"]
    # 4 pages: d, then b (not next to d), then c joins b and d: the block b-c-d, used from b.
    assert space.victims_for(4 * PAGE, lru) == ["b", "c"]
    assert space.victims_for(8 * PAGE, lru) is None  # a and e are not candidates
    assert space.used == 10 * PAGE  # nothing changed


# -- the node store ---------------------------------------------------------------------------


def stored_size(store: NodeObjectStore, object_id: str) -> int:
    return next(info.size for info in store.list() if info.object_id == object_id)


def test_create_and_open(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 64 * MiB)
    value = {"weights": array(7), "step": 3}
    location = put(store, "obj1", value, owner="worker-1")
    assert location.where == "shared memory"
    assert location.path == shm_dir / "arena" and location.offset % PAGE == 0
    assert location.size == _shm.serialize(value).total_size
    opened = store.open("obj1", "reader-1")
    assert (opened.path, opened.offset, opened.size) == (location.path, location.offset, location.size)
    assert store.release("obj1", opened.offset, "reader-1")
    assert not store.release("obj1", opened.offset, "reader-1")  # released once per open
    assert_same(store.read("obj1"), value)
    assert "obj1" in store and len(store) == 1
    [info] = store.list()
    assert (info.object_id, info.size, info.owner, info.where) == ("obj1", location.size, "worker-1", "shared memory")
    assert info.last_access <= time.time()
    stats = store.stats()
    assert (stats.shm_bytes, stats.spilled_bytes, stats.num_objects) == (_regions.page_round(location.size), 0, 1)
    assert stats.held_bytes == 0
    # The arena is one sparse file: it takes memory only where objects have been.
    assert location.path.stat().st_size == store.capacity_bytes
    assert location.path.stat().st_blocks * 512 < 2 * location.size


def test_unknown_and_duplicate_ids(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 64 * MiB)
    with pytest.raises(ObjectNotInStoreError) as caught:
        store.open("nope", "reader")
    assert isinstance(caught.value, ObjectLostError)
    assert caught.value.object_id == "nope"
    assert store.delete("nope") is False
    put(store, "obj1", 1)
    with pytest.raises(ObjectExistsError):
        put(store, "obj1", 2)
    assert store.read("obj1") == 1
    for bad in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            put(store, bad, 1)
    assert files(shm_dir) == ["arena"]


def test_thousand_puts_released_return_to_baseline(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 2 << 30)
    baseline = store.stats()
    serialized = _shm.serialize(np.zeros(MiB, dtype=np.uint8))
    for index in range(1000):
        store.create(f"put{index}", serialized, "driver")
    stats = store.stats()
    assert stats.num_objects == 1000 and stats.shm_bytes == 1000 * _regions.page_round(serialized.total_size)
    for index in range(1000):
        assert store.delete(f"put{index}")
    assert store.stats() == baseline
    assert (baseline.shm_bytes, baseline.spilled_bytes, baseline.num_objects) == (0, 0, 0)
    assert files(shm_dir) == ["arena"] and files(spill_dir) == []


def test_a_freed_region_is_reused_from_the_bottom(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 64 * MiB)
    first = put(store, "a", array(1))
    second = put(store, "b", array(2))
    assert (first.offset, second.offset) == (0, _regions.page_round(first.size))
    touched = (shm_dir / "arena").stat().st_blocks
    store.delete("a")
    again = put(store, "c", array(3))
    assert again.offset == 0  # the pages "a" already faulted in, not fresh ones
    assert (shm_dir / "arena").stat().st_blocks == touched
    assert np.array_equal(store.read("c"), array(3)) and np.array_equal(store.read("b"), array(2))
    store.delete("b")
    store.delete("c")
    assert put(store, "big", array(4, 2 * MiB)).offset == 0  # the two freed regions merged


def test_a_readers_array_keeps_its_region_until_it_is_collected(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 8 * MiB)
    first = put(store, "mine", array(11))
    held = store.read("mine")
    assert store.delete("mine") and "mine" not in store
    with pytest.raises(ObjectNotInStoreError):
        store.open("mine", "reader")  # gone for everyone else at once
    region = _regions.page_round(first.size)
    assert store.stats().held_bytes == region
    for index in range(20):  # new objects, more than the arena holds: none lands on "mine"
        location = put(store, f"new{index}", array(100 + index))
        assert location.where == "spilled" or not first.offset <= location.offset < first.offset + region
        assert np.array_equal(held, array(11))
        if index % 2:
            store.delete(f"new{index}")
    assert np.array_equal(held, array(11)) and not held.flags.writeable
    del held
    gc.collect()
    assert store.stats().held_bytes == 0
    for index in range(0, 20, 2):
        store.delete(f"new{index}")
    assert put(store, "next", array(12)).offset == first.offset  # now it is reused


def test_a_pinned_object_is_not_spilled_but_a_deleted_one_is_kept_for_its_readers(
    shm_dir: Path, spill_dir: Path
) -> None:
    store = make_store(shm_dir, spill_dir, 2 * MiB + 2 * PAGE)
    put(store, "mine", array(11))
    held = store.read("mine")
    put(store, "other1", array(12))
    put(store, "other2", array(13))  # needs room: other1 goes, "mine" is pinned
    where = {i.object_id: i.where for i in store.list()}
    assert where == {"mine": "shared memory", "other1": "spilled", "other2": "shared memory"}
    store.delete("mine")
    assert files(spill_dir) == [next(iter(files(spill_dir)))]  # other1's only
    assert np.array_equal(held, array(11))
    assert np.shares_memory(held, np.frombuffer(mapping_of(held), dtype=np.uint8))
    assert np.array_equal(store.read("other1"), array(12))  # restoring it spills other2
    assert np.array_equal(held, array(11))
    assert store.stats().held_bytes > 0
    del held
    gc.collect()
    assert store.stats().held_bytes == 0


def test_pins_of_a_reader_that_died_are_dropped(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 64 * MiB)
    put(store, "a", array(1))
    put(store, "b", array(2))
    opened = [store.open("a", "dead-reader"), store.open("a", "dead-reader"), store.open("b", "live-reader")]
    assert store.readers() == {"dead-reader", "live-reader"}
    store.delete("a")
    store.delete("b")
    assert store.stats().held_bytes == 2 * _regions.page_round(opened[0].size)
    assert store.drop_reader("dead-reader") == 2
    assert store.readers() == {"live-reader"}
    assert store.stats().held_bytes == _regions.page_round(opened[2].size)
    assert store.drop_reader("dead-reader") == 0
    assert store.release("b", opened[2].offset, "live-reader")
    assert store.stats().shm_bytes == 0


def test_fragmented_room_spills_neighbours_or_falls_back_to_a_spill_file(shm_dir: Path, spill_dir: Path) -> None:
    size = _regions.page_round(_shm.serialize(array(0)).total_size)
    store = make_store(shm_dir, spill_dir, 6 * size)
    for index in range(6):
        put(store, f"o{index}", array(index))
    held = {index: store.read(f"o{index}") for index in (1, 3, 5)}  # pinned: never moved
    for index in (0, 2, 4):
        store.delete(f"o{index}")
    assert store.stats().shm_bytes == 3 * size  # half free, in three holes of one object each
    big = put(store, "big", array(7, 2 * MiB))  # needs two: no pair of holes is contiguous
    assert big.where == "spilled" and big.path.parent == spill_dir
    assert np.array_equal(store.read("big"), array(7, 2 * MiB))  # mapped from its file
    for index in (0, 2, 4):
        put(store, f"n{index}", array(10 + index))  # the holes refill
    del held[3]
    gc.collect()
    # o3 is unpinned now: o3 and its unpinned neighbours n2 or n4 go to disk to make room.
    again = put(store, "big2", array(8, 2 * MiB))
    assert again.where == "shared memory"
    where = {i.object_id: i.where for i in store.list()}
    assert where["o1"] == where["o5"] == "shared memory"
    assert where["o3"] == "spilled" and "spilled" in (where["n2"], where["n4"])
    for name, seed in (("o1", 1), ("o3", 3), ("o5", 5), ("n0", 10), ("n2", 12), ("n4", 14)):
        assert np.array_equal(store.read(name), array(seed))
    assert np.array_equal(store.read("big2"), array(8, 2 * MiB))
    assert np.array_equal(held[1], array(1)) and np.array_equal(held[5], array(5))
    assert store.stats().shm_bytes <= store.capacity_bytes


def test_a_small_store_spills_and_restores_everything(shm_dir: Path, spill_dir: Path) -> None:
    capacity = 10 * MiB
    store = make_store(shm_dir, spill_dir, capacity)
    for index in range(50):
        put(store, f"obj{index}", {"index": index, "data": array(index)})
        stats = store.stats()
        assert stats.shm_bytes <= capacity
        in_shm = [i.size for i in store.list() if i.where == "shared memory"]
        assert stats.shm_bytes == sum(_regions.page_round(size) for size in in_shm)
        assert stats.spilled_bytes == sum(i.size for i in store.list() if i.where == "spilled")
    stats = store.stats()
    assert stats.num_objects == 50 and stats.spills >= 40 and stats.num_spilled >= 40
    assert len(files(spill_dir)) == stats.num_spilled
    for index in range(50):
        loaded = store.read(f"obj{index}")
        assert loaded["index"] == index and np.array_equal(loaded["data"], array(index))
        assert store.stats().shm_bytes <= capacity
        del loaded
    assert store.stats().restores >= 40
    where = {info.object_id: info.where for info in store.list()}
    assert sorted(f"obj{i}" for i in range(41, 50)) == sorted(k for k, w in where.items() if w == "shared memory")
    store.clear()
    assert store.stats().shm_bytes == store.stats().spilled_bytes == 0
    assert files(shm_dir) == ["arena"] and files(spill_dir) == []


def test_the_least_recently_used_object_is_spilled_first(shm_dir: Path, spill_dir: Path) -> None:
    size = _regions.page_round(_shm.serialize(array(1)).total_size)
    store = make_store(shm_dir, spill_dir, 3 * size + PAGE)
    put(store, "a", array(1))
    put(store, "b", array(2))
    put(store, "c", array(3))
    store.release("a", store.open("a", "reader").offset, "reader")  # now b is the least recently used
    put(store, "d", array(4))
    where = {info.object_id: info.where for info in store.list()}
    assert where == {"a": "shared memory", "b": "spilled", "c": "shared memory", "d": "shared memory"}
    assert len(files(spill_dir)) == 1
    assert np.array_equal(store.read("b"), array(2))  # restoring b spills c, the oldest now
    where = {info.object_id: info.where for info in store.list()}
    assert where == {"a": "shared memory", "b": "shared memory", "c": "spilled", "d": "shared memory"}


def test_an_object_bigger_than_the_store_goes_to_disk(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, MiB)
    put(store, "small", array(0, 256 * 1024))
    location = put(store, "huge", array(5, 8 * MiB))
    assert location.where == "spilled" and location.path.parent == spill_dir and location.offset == 0
    assert store.open("huge", "reader").path == location.path  # mapped from the spill file, not restored
    loaded = store.read("huge")
    assert np.array_equal(loaded, array(5, 8 * MiB)) and not loaded.flags.writeable
    stats = store.stats()
    assert stats.spilled_bytes == location.size and stats.shm_bytes < MiB
    assert np.array_equal(store.read("small"), array(0, 256 * 1024))  # never pushed out
    assert store.delete("huge") and files(spill_dir) == []
    assert np.array_equal(loaded, array(5, 8 * MiB))


def test_delete_owned_by(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 3 * MiB)
    for index in range(6):
        put(store, f"obj{index}", array(index), owner="dead" if index % 2 else "alive")
    assert sorted(store.delete_owned_by("dead")) == ["obj1", "obj3", "obj5"]
    assert sorted(info.object_id for info in store.list()) == ["obj0", "obj2", "obj4"]
    assert store.delete_owned_by("dead") == []
    for index in (0, 2, 4):
        assert np.array_equal(store.read(f"obj{index}"), array(index))
    store.delete_owned_by("alive")
    assert store.stats().num_objects == store.stats().shm_bytes == store.stats().spilled_bytes == 0
    assert files(shm_dir) == ["arena"] and files(spill_dir) == []


def test_reserve_write_seal(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 64 * MiB)
    serialized = _shm.serialize(array(3))
    location = store.reserve("obj", serialized.total_size, "worker-9")
    assert location.where == "shared memory" and location.path == shm_dir / "arena"
    with pytest.raises(TimeoutError):
        store.open("obj", "reader", timeout=0.05)  # not sealed yet: nobody may map it
    writer = _shm.Arena.open(location.path)  # as the owner's process does
    writer.write(location.offset, serialized)
    assert store.seal("obj").size == serialized.total_size
    assert np.array_equal(store.read("obj"), array(3))
    store.delete("obj")
    # The same region again: the old segment's header is there, but nothing was written.
    assert store.reserve("never-written", 1000, "worker-9").offset == location.offset
    with pytest.raises(ObjectNotInStoreError):
        store.seal("never-written")
    store.reserve("orphan", 1000, "worker-9")
    assert store.delete_owned_by("worker-9") == ["orphan"]
    assert store.stats().shm_bytes == 0
    writer.close()


def test_a_failed_spill_keeps_the_object(shm_dir: Path, spill_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(shm_dir, spill_dir, 2 * MiB + 8192)
    put(store, "a", array(1))
    put(store, "b", array(2))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_shm, "copy_range", disk_full)  # the copy both spill and restore use
    location = put(store, "c", array(3))
    assert location.where == "spilled"  # no room was made: a file of its own
    assert {info.object_id: info.where for info in store.list()} == {
        "a": "shared memory",
        "b": "shared memory",
        "c": "spilled",
    }
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        assert np.array_equal(store.read(name), array(seed))
    assert files(spill_dir) == [location.path.name]


def test_concurrent_creates_reads_and_deletes(shm_dir: Path, spill_dir: Path) -> None:
    store = make_store(shm_dir, spill_dir, 2 * MiB)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(25):
                put(store, f"w{worker}-{index}", array(worker * 1000 + index, 256 * 1024), owner=f"w{worker}")
                # An earlier one, probably spilled by now (every fifth is deleted: skip those).
                back = max(0, index - 2 if index % 5 == 0 else index - 1)
                held = store.read(f"w{worker}-{back}")
                assert np.array_equal(held, array(worker * 1000 + back, 256 * 1024))
                if index % 5 == 4:
                    assert store.delete(f"w{worker}-{index}")
                assert np.array_equal(held, array(worker * 1000 + back, 256 * 1024))
                del held
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.stats().num_objects == 4 * 20
    assert store.stats().shm_bytes <= 2 * MiB
    for worker in range(4):
        store.delete_owned_by(f"w{worker}")
    gc.collect()
    stats = store.stats()
    assert (stats.num_objects, stats.shm_bytes, stats.spilled_bytes) == (0, 0, 0)
    assert files(shm_dir) == ["arena"] and files(spill_dir) == []


@pytest.mark.slow
def test_measure_read_and_write_speed(shm_dir: Path, spill_dir: Path) -> None:
    big = shm_dir / "big"
    _shm.write_segment(big, _shm.serialize(np.ones(100 * 1000 * 1000 // 8)))
    reads = []
    for _ in range(50):
        start = time.perf_counter()
        loaded = _shm.read_segment(big)
        reads.append(time.perf_counter() - start)
        del loaded
    os.unlink(big)
    store = make_store(shm_dir, spill_dir, 1 << 30)
    chunk = np.random.default_rng(0).random(10 * 1000 * 1000 // 8)
    count = (1 << 30) // chunk.nbytes
    rates = []
    for _ in range(3):  # the first round faults the arena's pages in, the next reuse them
        start = time.perf_counter()
        for index in range(count):
            store.create(f"w{index}", _shm.serialize(chunk), "me")
        rates.append(count * chunk.nbytes / (time.perf_counter() - start) / 1e9)
        store.clear()
    print(
        f"\nread_segment of 100 MB: median {sorted(reads)[25] * 1e6:.0f} us, best {min(reads) * 1e6:.0f} us"
        f"\narena writes of {count} x 10 MB: " + ", ".join(f"{rate:.2f}" for rate in rates) + " GB/s"
    )
    store.close()
