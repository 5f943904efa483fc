"""The node's shared-memory object store, through the public API on a real cluster."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import actorhub
from actorhub.runtime.runtime import current

MIB = 1024 * 1024


@pytest.fixture
def small_store(session_root: object) -> Iterator[actorhub.ClusterContext]:
    context = actorhub.init(num_cpus=2, object_store_memory=64 * MIB)
    try:
        yield context
    finally:
        actorhub.shutdown()
        # /dev/shm outlives processes: nothing of the session may stay there
        from actorhub.object_store.shm import segment_root

        suffix = context.session_dir[-6:]
        assert not list(segment_root().glob(f"actorhub-{suffix}-*"))


def _store() -> Any:
    return current().store_client().list()


def _settle(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gc.collect()
        time.sleep(0.05)


def test_large_arrays_map_without_copy_and_read_only(small_store: actorhub.ClusterContext) -> None:
    array = np.arange(4 * MIB, dtype=np.int64)  # 32 MiB
    ref = actorhub.put(array)
    assert _store().used >= array.nbytes
    got = actorhub.get(ref)
    assert np.array_equal(got, array)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1
    again = actorhub.get(ref)
    assert not np.shares_memory(got, array)  # the store's copy, not the caller's
    assert again.ctypes.data != 0

    @actorhub.remote
    def total(x: Any) -> int:
        return int(x.sum())

    @actorhub.remote
    class Reader:
        def first(self, x: Any) -> int:
            return int(x[1])

    assert actorhub.get(total.remote(ref)) == int(array.sum())
    assert actorhub.get(Reader.remote().first.remote(ref)) == 1
    small = actorhub.put(np.arange(10))
    assert _store().used < 2 * array.nbytes  # small values stay inline
    assert actorhub.get(small).tolist() == list(range(10))


def test_a_thousand_puts_released_bring_the_store_back_to_baseline(small_store: actorhub.ClusterContext) -> None:
    baseline = _store()
    for i in range(1000):
        ref = actorhub.put(np.full(MIB // 8, i, dtype=np.int64))
        if i % 250 == 0:
            assert actorhub.get(ref)[0] == i
        del ref
    _settle(lambda: len(_store().objects) == len(baseline.objects))
    after = _store()
    assert (after.used, after.spilled) == (baseline.used, baseline.spilled)


def test_a_store_smaller_than_the_data_spills_and_loses_nothing(small_store: actorhub.ClusterContext) -> None:
    refs = [actorhub.put(np.full(2 * MIB, i, dtype=np.int64)) for i in range(12)]  # 12 x 16 MiB > 64 MiB
    listing = _store()
    assert listing.spilled > 0 and listing.used <= listing.capacity
    assert {o.where for o in listing.objects} == {"shared memory", "spilled"}
    for i, ref in enumerate(refs):
        value = actorhub.get(ref)
        assert value.shape == (2 * MIB,) and value[0] == i and value[-1] == i


def test_memory_command_lists_stored_objects(small_store: actorhub.ClusterContext) -> None:
    import subprocess
    import sys

    ref = actorhub.put(np.zeros(MIB, dtype=np.int64))
    out = subprocess.run(
        [sys.executable, "-m", "actorhub.cli", "memory"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert ref.hex() in out.stdout and "shared memory" in out.stdout and "8.0 MiB" in out.stdout


def test_objects_of_a_sigkilled_owner_are_freed(small_store: actorhub.ClusterContext) -> None:
    import signal
    import subprocess
    import sys

    body = (
        "import actorhub, numpy, time\n"
        "actorhub.init(address='auto')\n"
        "ref = actorhub.put(numpy.ones(1024 * 1024))\n"
        "print(ref.hex(), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", body], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    object_id = proc.stdout.readline().strip()
    assert object_id in {o.object_id for o in _store().objects}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _settle(lambda: object_id not in {o.object_id for o in _store().objects})


def test_large_arguments_travel_through_the_store_for_the_call_only(small_store: actorhub.ClusterContext) -> None:
    @actorhub.remote
    class Sink:
        def look(self, x: Any, scale: int = 1) -> tuple[int, bool]:
            return int(x[-1]) * scale, bool(x.flags.writeable)

    @actorhub.remote
    def last(x: Any) -> int:
        return int(x[-1])

    baseline = len(_store().objects)
    array = np.arange(MIB, dtype=np.int64)  # 8 MiB: staged in the store, mapped by the callee
    sink = Sink.remote()
    assert actorhub.get(sink.look.remote(array, scale=2)) == (2 * (MIB - 1), False)
    assert actorhub.get(last.remote(x=array)) == MIB - 1
    assert actorhub.get([sink.look.remote(array) for _ in range(20)])[-1] == (MIB - 1, False)
    _settle(lambda: len(_store().objects) == baseline)  # freed once the calls were over


@actorhub.remote
class Holder:
    def hold(self, x: Any) -> int:
        self.x = x  # a read-only view of the store's region, pinned while it lives
        return int(x[0])

    def intact(self, value: int) -> bool:
        return bool((self.x == value).all()) and not self.x.flags.writeable

    def drop(self) -> None:
        del self.x
        gc.collect()


def test_a_readers_array_is_not_overwritten_when_its_region_is_free_to_reuse(
    small_store: actorhub.ClusterContext,
) -> None:
    baseline = _store()
    holder = Holder.remote()
    # 16 MiB: staged in the store for the call, mapped by the holder, freed after the call.
    assert actorhub.get(holder.hold.remote(np.full(2 * MIB, 7, dtype=np.int64))) == 7
    _settle(lambda: len(_store().objects) == len(baseline.objects))
    assert _store().used >= 16 * MIB + baseline.used  # its region is kept for the holder
    for i in range(12):  # 192 MiB through a 64 MiB store: every free region is reused
        ref = actorhub.put(np.full(2 * MIB, i, dtype=np.int64))
        assert actorhub.get(ref)[-1] == i
        del ref
    assert actorhub.get(holder.intact.remote(7))
    actorhub.get(holder.drop.remote())
    _settle(lambda: (_store().used, len(_store().objects)) == (baseline.used, len(baseline.objects)))


def test_pins_of_a_killed_reader_are_swept(small_store: actorhub.ClusterContext) -> None:
    baseline = _store()
    holder = Holder.remote()
    assert actorhub.get(holder.hold.remote(np.ones(2 * MIB))) == 1
    _settle(lambda: len(_store().objects) == len(baseline.objects))
    assert _store().used > baseline.used  # the holder maps it still
    actorhub.kill(holder)  # SIGKILL: it never releases its pin; the node notices it is gone
    _settle(lambda: _store().used == baseline.used)


@actorhub.remote(max_restarts=0)
class ResultWriter:
    def store_for(self, owner: str, owner_node_id: str) -> str:
        """Store a result for `owner` as a call's reply would, without any reply naming it."""
        return current().store_result(np.ones(MIB, dtype=np.int64), owner, owner_node_id)[0].partition("@")[0]

    def big(self) -> Any:
        return np.full(MIB, 3, dtype=np.int64)

    def pid(self) -> int:
        import os

        return os.getpid()


def test_a_result_whose_reply_died_with_its_callee_is_freed(
    session_root: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    monkeypatch.setenv("ACTORHUB_LOST_RESULT_GRACE_S", "0.5")
    actorhub.init(num_cpus=2)
    try:
        rt = current()
        writer = ResultWriter.remote()
        received = writer.big.remote()
        assert int(actorhub.get(received)[0]) == 3  # a reply that arrived: its owner knows the id
        known = rt.objects.store_id_of(received.hex())
        lost = actorhub.get(writer.store_for.remote(rt.address, rt.node_id))  # one no reply names
        assert {known, lost} <= {o.object_id for o in _store().objects}
        os.kill(actorhub.get(writer.pid.remote()), signal.SIGKILL)
        _settle(lambda: lost not in {o.object_id for o in _store().objects}, timeout=20)
        assert known in {o.object_id for o in _store().objects}
        assert int(actorhub.get(received)[-1]) == 3
    finally:
        actorhub.shutdown()
