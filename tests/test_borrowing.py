"""Borrower reference counting: an object lives while any process holds a ref to it.

Each test watches the owner's own table (its ListOwnedObjects answer) to see an object kept
while borrowed and freed once the last borrower lets go.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _wait import collecting, wait_for

import actorhub
from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.runtime.runtime import current

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def borrow_cluster(shared_cluster: actorhub.ClusterContext) -> Iterator[actorhub.ClusterContext]:
    yield shared_cluster


def _owned(address: str) -> dict[str, worker_pb2.OwnedObject]:
    stub = worker_pb2_grpc.WorkerStub(current().channels.get(address))
    reply = stub.ListOwnedObjects(common_pb2.Empty(), timeout=10)
    return {o.object_id: o for o in reply.objects}


def _until_freed(ref_id: str, owner: str, timeout: float = 15.0) -> None:
    """Wait until the process at `owner` no longer owns `ref_id`."""
    wait_for(collecting(lambda: ref_id not in _owned(owner)), f"{owner} to free {ref_id}", timeout)


@actorhub.remote
class Keeper:
    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, boxed: list[Any]) -> int:
        self.kept.extend(boxed)
        return len(self.kept)

    def read(self) -> list[Any]:
        return actorhub.get(self.kept)

    def drop(self) -> None:
        self.kept.clear()

    def peek(self, boxed: list[Any]) -> Any:
        return actorhub.get(boxed[0])

    def forward(self, other: Any, boxed: list[Any]) -> int:
        return int(actorhub.get(other.keep.remote(boxed)))

    def make(self, n: int) -> list[Any]:
        return [actorhub.put(np.full(n, 7, dtype=np.int64))]

    def address(self) -> str:
        return current().address

    def pid(self) -> int:
        return os.getpid()


@actorhub.remote
class AsyncKeeper:
    def __init__(self) -> None:
        self.kept: list[Any] = []

    async def keep(self, boxed: list[Any]) -> int:
        self.kept.extend(boxed)
        return len(self.kept)

    async def read(self) -> list[Any]:
        return [await ref for ref in self.kept]

    async def drop(self) -> None:
        self.kept.clear()


@pytest.mark.parametrize("keeper_class", [Keeper, AsyncKeeper], ids=["actor", "async actor"])
def test_a_ref_an_actor_keeps_outlives_the_callers_ref(borrow_cluster: Any, keeper_class: Any) -> None:
    me = current().address
    keeper = keeper_class.remote()
    ref = actorhub.put({"answer": 42})
    big = actorhub.put(np.arange(MIB, dtype=np.int64))  # in the node's store
    ids = [ref.hex(), big.hex()]
    assert actorhub.get(keeper.keep.remote([ref, big])) == 2
    del ref, big
    gc.collect()
    time.sleep(0.3)
    owned = _owned(me)
    for object_id in ids:
        assert object_id in owned, "freed while an actor still holds a ref"
        assert sum(owned[object_id].borrowers.values()) == 1
    value, array = actorhub.get(keeper.read.remote())
    assert value == {"answer": 42} and int(array[-1]) == MIB - 1
    actorhub.get(keeper.drop.remote())
    for object_id in ids:
        _until_freed(object_id, me)
    actorhub.kill(keeper)


def test_a_call_that_does_not_keep_a_ref_leaves_no_borrower(borrow_cluster: Any) -> None:
    me = current().address
    keeper = Keeper.remote()
    ref = actorhub.put("x" * 10)
    assert actorhub.get(keeper.peek.remote([ref])) == "x" * 10
    assert not _owned(me)[ref.hex()].borrowers
    object_id = ref.hex()
    del ref
    _until_freed(object_id, me)
    actorhub.kill(keeper)


def test_a_ref_inside_a_put_object_lives_as_long_as_it(borrow_cluster: Any) -> None:
    me = current().address
    inner = actorhub.put([1, 2, 3])
    inner_id = inner.hex()
    outer = actorhub.put({"inner": inner})
    del inner
    gc.collect()
    time.sleep(0.2)
    assert _owned(me)[inner_id].contained_in == 1
    got = actorhub.get(outer)["inner"]
    assert actorhub.get(got) == [1, 2, 3]
    del got

    @actorhub.remote
    def read_nested(box: Any) -> Any:
        return actorhub.get(actorhub.get(box[0])["inner"])

    assert actorhub.get(read_nested.remote([outer])) == [1, 2, 3]
    outer_id = outer.hex()
    del outer
    _until_freed(outer_id, me)
    _until_freed(inner_id, me)


def test_a_ref_returned_by_an_actor_stays_readable_until_the_caller_drops_it(borrow_cluster: Any) -> None:
    keeper = Keeper.remote()
    address = actorhub.get(keeper.address.remote())
    [made] = actorhub.get(keeper.make.remote(MIB // 8))
    assert made.owner_address == address
    time.sleep(0.3)  # the actor dropped its own ref long ago
    assert made.hex() in _owned(address)
    assert int(actorhub.get(made)[0]) == 7
    made_id = made.hex()
    del made
    _until_freed(made_id, address)
    actorhub.kill(keeper)


def test_a_ref_made_in_a_task_is_kept_for_the_caller(borrow_cluster: Any) -> None:
    @actorhub.remote
    def make() -> list[Any]:
        return [actorhub.put(np.full(MIB // 8, 3, dtype=np.int64))]

    [made] = actorhub.get(make.remote())
    time.sleep(0.3)
    assert int(actorhub.get(made).sum()) == 3 * (MIB // 8)
    owner, made_id = made.owner_address, made.hex()
    assert made_id in _owned(owner)
    del made
    _until_freed(made_id, owner)


def test_a_ref_passed_on_to_a_third_process_is_kept_by_it(borrow_cluster: Any) -> None:
    me = current().address
    a, b = Keeper.remote(), Keeper.remote()
    ref = actorhub.put("passed along")
    object_id = ref.hex()
    assert actorhub.get(a.forward.remote(b, [ref])) == 1
    del ref
    gc.collect()
    time.sleep(0.3)
    assert object_id in _owned(me)
    assert actorhub.get(b.read.remote()) == ["passed along"]
    actorhub.get(b.drop.remote())
    _until_freed(object_id, me)
    actorhub.kill(a)
    actorhub.kill(b)


def test_nested_refs_given_to_tasks_are_freed_after_them(borrow_cluster: Any) -> None:
    me = current().address

    @actorhub.remote
    def total(box: list[Any]) -> int:
        return int(sum(actorhub.get(box)))

    refs = [actorhub.put(i) for i in range(20)]
    ids = [r.hex() for r in refs]
    assert actorhub.get(total.remote(refs)) == sum(range(20))
    del refs
    for object_id in ids:
        _until_freed(object_id, me)


def test_the_refs_of_a_borrower_that_dies_are_released(borrow_cluster: Any) -> None:
    me = current().address
    keeper = Keeper.remote()
    ref = actorhub.put("held by the doomed")
    object_id = ref.hex()
    actorhub.get(keeper.keep.remote([ref]))
    del ref
    gc.collect()
    assert _owned(me)[object_id].borrowers
    os.kill(actorhub.get(keeper.pid.remote()), signal.SIGKILL)
    _until_freed(object_id, me, 20)


def test_a_ref_pickled_by_user_code_is_kept_while_its_owner_lives(borrow_cluster: Any) -> None:
    me = current().address
    ref = actorhub.put("escaped")
    data = pickle.dumps(ref)
    object_id = ref.hex()
    del ref
    gc.collect()
    time.sleep(0.3)
    assert _owned(me)[object_id].escaped
    assert actorhub.get(pickle.loads(data)) == "escaped"


def test_the_store_comes_back_to_baseline_after_borrowed_arrays_are_dropped(borrow_cluster: Any) -> None:
    keeper = Keeper.remote()
    baseline = current().store_client().list().used
    refs = [actorhub.put(np.full(MIB // 8, i, dtype=np.int64)) for i in range(20)]
    actorhub.get(keeper.keep.remote(refs))
    del refs
    gc.collect()
    time.sleep(0.3)
    assert current().store_client().list().used >= baseline + 20 * MIB
    assert [int(a[0]) for a in actorhub.get(keeper.read.remote())] == list(range(20))
    actorhub.get(keeper.drop.remote())
    wait_for(collecting(lambda: current().store_client().list().used <= baseline), "the store to shrink back", 15)
    actorhub.kill(keeper)


def test_memory_command_shows_owners_holders_and_where(borrow_cluster: Any) -> None:
    import subprocess
    import sys

    keeper = Keeper.remote()
    keeper_address = actorhub.get(keeper.address.remote())
    small = actorhub.put("a small value")
    big = actorhub.put(np.zeros(MIB, dtype=np.int64))
    actorhub.get(keeper.keep.remote([small]))
    out = subprocess.run(
        [sys.executable, "-m", "actorhub.cli", "memory"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "inline" in lines[small.hex()] and "driver" in lines[small.hex()]
    assert f"Keeper actor {keeper.actor_id[:8]} ({keeper_address}) x1" in lines[small.hex()]
    assert "owner x1" in lines[small.hex()]
    assert "shared memory" in lines[big.hex()] and "8.0 MiB" in lines[big.hex()]
    actorhub.kill(keeper)


def test_large_results_come_back_through_the_store(borrow_cluster: Any) -> None:
    rt = current()

    @actorhub.remote
    class Weights:
        def pull(self, fill: int) -> Any:
            return np.full(MIB, fill, dtype=np.int64)  # 8 MiB

        def both(self) -> tuple[Any, int]:
            return np.ones(MIB // 4, dtype=np.int64), 5

    @actorhub.remote
    def produce(fill: int) -> Any:
        return np.full(MIB, fill, dtype=np.int64)

    @actorhub.remote
    def first(array: Any) -> int:
        return int(array[0])

    weights = Weights.remote()
    pulled = weights.pull.remote(3)
    produced = produce.remote(4)
    big, small = weights.both.options(num_returns=2).remote()
    for ref, fill in ((pulled, 3), (produced, 4)):
        array = actorhub.get(ref)
        assert rt.objects.is_stored(ref.hex()), "a large result travelled inline"
        assert array.nbytes == 8 * MIB and int(array[-1]) == fill
        assert not array.flags.writeable  # mapped from the store
        assert actorhub.get(first.remote(ref)) == fill  # another process reads it from the store
    assert rt.objects.is_stored(big.hex()) and not rt.objects.is_stored(small.hex())
    assert int(actorhub.get(big).sum()) == MIB // 4 and actorhub.get(small) == 5
    # Sizes of these objects, not the store's bytes in use: that also counts objects of earlier
    # tests whose pins are still being released, so it can fall while this test adds to it.
    store_ids = {rt.objects.store_id_of(r.hex()) for r in (pulled, produced, big)}
    listed = {o.object_id: o.size for o in rt.store_client().list().objects}
    assert store_ids <= set(listed)
    assert sum(listed[i] for i in store_ids) >= 18 * MIB
    del array, ref, pulled, produced, big, small
    # Freed by their owner, this driver. (Bytes in use may lag: a reader's pins outlive its arrays
    # by a flush period, and its arrays live until its own garbage collection.)
    wait_for(collecting(lambda: not store_ids & {o.object_id for o in rt.store_client().list().objects}),
             "the objects to leave the store", 15)
    actorhub.kill(weights)
