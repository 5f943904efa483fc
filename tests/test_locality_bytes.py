"""DEFAULT task placement by argument bytes (issue 12, point 2): `task_placement.locality` over
(store id, bytes) pairs, the object table's record of stored sizes, and a 3-node cluster where a
task runs next to the most bytes of its arguments, not the most arguments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import nodes_b_and_c

import actorhub
from actorhub.object_store.client import INLINE_LIMIT
from actorhub.runtime.object_table import ErrorOrigin, ObjectTable
from actorhub.runtime.runtime import current
from actorhub.tasks.task_placement import locality
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

KIB, MIB = 1 << 10, 1 << 20
NODE_OF_ADDRESS = {"a:1": "A", "b:1": "B", "c:1": "C"}


# -- locality, pure ---------------------------------------------------------------------------
def test_one_big_argument_outweighs_two_small_ones() -> None:
    recorded = [("r1@a:1", 200 * KIB), ("r2@a:1", 200 * KIB), ("r3@b:1", 5 * MIB)]
    assert locality(recorded, "A", NODE_OF_ADDRESS) == "B"
    # Two small ones outweigh one a little smaller than both together.
    recorded = [("r1@a:1", 200 * KIB), ("r2@a:1", 200 * KIB), ("r3@b:1", 399 * KIB)]
    assert locality(recorded, "C", NODE_OF_ADDRESS) == "A"


def test_a_stored_argument_of_unknown_size_counts_as_the_store_threshold() -> None:
    # Two borrowed stored arguments (size 0: not known) on C weigh 2 x 100 KiB.
    borrowed = [("r1@c:1", 0), ("r2@c:1", 0)]
    assert locality([*borrowed, ("r3@b:1", 2 * INLINE_LIMIT - 1)], "A", NODE_OF_ADDRESS) == "C"
    assert locality([*borrowed, ("r3@b:1", 2 * INLINE_LIMIT + 1)], "A", NODE_OF_ADDRESS) == "B"


def test_ties_go_to_the_callers_node_and_unknown_nodes_do_not_count() -> None:
    # No address: in the caller's own store (a put, or a result made on its node).
    assert locality([("c.p1", MIB), ("r1@b:1", MIB)], "A", NODE_OF_ADDRESS) == "A"
    assert locality([("r1@b:1", MIB), ("c.p1", MIB)], "A", NODE_OF_ADDRESS) == "A"
    # A node not (or no longer) in the view: its bytes count nowhere.
    assert locality([("r1@gone:1", 9 * MIB), ("r2@c:1", MIB)], "A", NODE_OF_ADDRESS) == "C"
    assert locality([("r1@gone:1", MIB)], "A", NODE_OF_ADDRESS) == ""
    assert locality([], "A", NODE_OF_ADDRESS) == ""


# -- the object table's record of stored sizes ----------------------------------------------------
def test_the_object_table_keeps_each_stored_objects_size_while_it_holds_it() -> None:
    table = ObjectTable()
    table.put_stored("c.p1", 3 * MIB)
    assert table.stored_bytes_of("c.p1") == 3 * MIB
    table.create_pending(["c.t1.0", "c.t1.1", "c.t2.0"], ErrorOrigin())
    table.store_results(["c.t1.0", "c.t1.1"], ["", "r1@b:1"], [0, 2 * MIB])
    table.complete_many([("c.t1.0", b"inline", None), ("c.t1.1", b"", None)])
    assert (table.stored_bytes_of("c.t1.0"), table.stored_bytes_of("c.t1.1")) == (0, 2 * MIB)
    # A callee that does not tell sizes: stored, size unknown (placement counts the threshold).
    table.store_results(["c.t2.0"], ["r2@b:1"])
    assert table.store_id_of("c.t2.0") == "r2@b:1" and table.stored_bytes_of("c.t2.0") == 0
    # A value handed over to another object takes its size along.
    table.create_pending(["c.t3.0"], ErrorOrigin())
    table.complete_as([("c.t1.1", "c.t3.0")])
    assert (table.stored_bytes_of("c.t1.1"), table.stored_bytes_of("c.t3.0")) == (0, 2 * MIB)
    # Lost and made pending again (lineage): the old size goes with the old copy.
    assert table.reset_pending("c.t3.0", "r1@b:1")
    assert table.stored_bytes_of("c.t3.0") == 0
    # Freed with its last ref: nothing is kept for it.
    table.add_local_ref("c.p1")
    table.drop_local_ref("c.p1")
    assert table.collect_freed_stored() == ["c.p1"]
    assert table.stored_bytes_of("c.p1") == 0


# -- a 3-node cluster -------------------------------------------------------------------------------
@actorhub.remote
def blob(size: int) -> Any:
    return np.ones(size // 8)  # over 100 KiB: stored in the store of the node that made it


@actorhub.remote
def where_run(*arrays: Any) -> str:
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote
class Maker:
    def blob(self, size: int) -> Any:
        return np.ones(size // 8)


def _alive() -> dict[str, str]:
    return {n.node_id: n.address for n in current().hub.cluster_status().nodes if n.alive}


@pytest.fixture(scope="module")
def nodes(shared_cluster: actorhub.ClusterContext) -> Iterator[tuple[str, str, str]]:
    """(the driver's node, node b, node c), 2 CPUs each."""
    with nodes_b_and_c(shared_cluster) as ids:
        yield ids


def _made_on(node: str, size: int) -> actorhub.ObjectRef[Any]:
    ref: actorhub.ObjectRef[Any] = blob.options(scheduling_strategy=On(node)).remote(size)
    actorhub.wait([ref], timeout=60)
    assert current().objects.store_id_of(ref.hex()).endswith("@" + _alive()[node])
    return ref


def test_a_task_runs_where_most_of_its_argument_bytes_are(nodes: tuple[str, str, str]) -> None:
    head, b, c = nodes
    big = _made_on(b, 5 * MIB)
    small = [_made_on(c, 200 * KIB) for _ in range(2)]
    # The executor told the owner each result's bytes in the store, in the call's reply.
    assert current().objects.stored_bytes_of(big.hex()) >= 5 * MIB
    assert all(200 * KIB <= current().objects.stored_bytes_of(r.hex()) < 5 * MIB for r in small)
    # Counted once each, c's two would win; by bytes, b's one does.
    assert actorhub.get(where_run.remote(*small, big), timeout=60) == b
    assert actorhub.get(where_run.remote(*small), timeout=60) == c
    # A put knows its size as it writes it: 5 MiB in the driver's store outweighs c's two.
    here = actorhub.put(np.ones(5 * MIB // 8))
    assert current().objects.stored_bytes_of(here.hex()) >= 5 * MIB
    assert actorhub.get(where_run.remote(*small, here), timeout=60) == head
    # An actor call's stored result carries its size too.
    maker = Maker.options(scheduling_strategy=On(b)).remote()
    from_actor = maker.blob.remote(5 * MIB)
    actorhub.wait([from_actor], timeout=60)
    assert current().objects.stored_bytes_of(from_actor.hex()) >= 5 * MIB
    assert actorhub.get(where_run.remote(*small, from_actor), timeout=60) == b
    actorhub.kill(maker)
