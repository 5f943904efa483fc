"""Where a task's lease is asked from under each scheduling strategy, without processes
(tasks/task_placement.py through the submitter's state, on a fake clock)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from _fake_clock import FakeClock

from actorhub.exceptions import OptionsError
from actorhub.tasks import task_placement
from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import Lease, SubmitState, Task
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

_seqs = itertools.count(1)
NODES = {"n1": 2.0, "n2": 2.0, "n3": 2.0}


def task(state: SubmitState, **options: Any) -> Task:
    seq = next(_seqs)
    opts = TaskOptions(**options)
    t = Task(seq, f"t{seq}", ("fn", b""), b"", opts, [f"c.t{seq}.0"])
    placement = task_placement.placement_of(opts, state.nodes, lambda n: True)
    t.pool = (placement, *t.pool[1:])
    return t


def state(clock: FakeClock, nodes: dict[str, float] = NODES) -> SubmitState:
    s = SubmitState("n1", clock.now)
    s.nodes_seen(dict(nodes))
    s.node_of_address = {f"node{n[1:]}:1": n for n in nodes}
    return s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_default_prefers_the_node_holding_most_argument_copies_while_it_has_room(clock: FakeClock) -> None:
    s = state(clock)
    t = task(s)
    # One argument in the caller's store (a put), two stored on n3 (results of calls there).
    t.arg_stores = [("c.p1", 0), ("r1@node3:1", 0), ("r2@node3:1", 0)]
    prefer = s.preferred(t)
    assert prefer == "n3"
    # There while it has room, whatever its load; then Ray's hybrid policy from the caller's node.
    assert [s.lease_requested(t.pool, prefer) for _ in range(4)] == ["n3", "n3", "n1", "n2"]
    # A tie between the caller's node and another goes to the caller's; locality is DEFAULT's only.
    t.arg_stores = [("c.p1", 0), ("r1@node2:1", 0)]
    assert s.preferred(t) == "n1"
    pinned = task(s, scheduling_strategy=On("n2"))
    pinned.arg_stores = [("r1@node3:1", 0)]
    assert s.preferred(pinned) == ""


def test_an_idle_lease_on_the_argument_node_is_taken_first(clock: FakeClock) -> None:
    s = state(clock)
    here, there = Lease(object(), ("", 1.0, "", ()), "n1"), Lease(object(), ("", 1.0, "", ()), "n3")
    for lease in (here, there):
        s.requested[lease.pool] += 1
        s.lease_granted(lease)
    t = task(s)
    t.arg_stores = [("r1@node3:1", 0)]
    assert s.task_ready(t) is there
    assert s.task_ready(task(s)) is here


def test_spread_asks_each_node_in_turn_and_passes_over_full_ones(clock: FakeClock) -> None:
    s = state(clock)
    pool = task(s, scheduling_strategy="SPREAD").pool
    assert pool[0] == task_placement.SPREAD_POOL
    assert [s.lease_requested(pool) for _ in range(6)] == ["n1", "n2", "n3", "n1", "n2", "n3"]
    s.load["n2"] = 0.0  # n2's leases went back: the only node with room
    assert s.lease_requested(pool) == "n2"
    assert s.max_leases(pool) == 6


def test_soft_affinity_pins_to_a_live_node_and_is_default_when_it_is_gone_or_too_small(clock: FakeClock) -> None:
    s = state(clock)
    soft = task(s, scheduling_strategy=On("n2", soft=True)).pool
    assert task_placement.pinned_node(soft[0]) == "n2" and task_placement.falls_back(soft[0])
    assert s.lease_requested(soft) == "n2" and s.max_leases(soft) == 2
    assert task(s, scheduling_strategy=On("gone", soft=True)).pool[0] == ""
    assert task(s, num_cpus=4, scheduling_strategy=On("n2", soft=True)).pool[0] == ""
    spill = task(s, scheduling_strategy=On("n2", soft=True, _spill_on_unavailable=True)).pool
    assert task_placement.pinned_node(spill[0]) == ""
    # n2's other CPU, then (n2 full) DEFAULT from the caller's node.
    assert [s.lease_requested(spill) for _ in range(3)] == ["n2", "n1", "n3"]
    hard = task(s, scheduling_strategy=On("n3", _fail_on_unavailable=True)).pool
    assert task_placement.pinned_node(hard[0]) == "n3" and task_placement.fails_when_busy(hard[0])
    assert s.lease_requested(hard) == "n3"


def test_actor_reservations_count_as_load(clock: FakeClock) -> None:
    s = state(clock)
    s.reserved = {"n1": 1.0}  # an actor holds one of n1's CPUs: n1 is half used
    assert s.lease_requested(("", 1.0, "", ())) == "n2"


@pytest.mark.parametrize("strategy", ["spread", "PACK", 3, {"node_id": "n1"}])
def test_bad_strategies_raise_options_errors_naming_the_option(strategy: Any) -> None:
    with pytest.raises(OptionsError, match=r"invalid options for f.options\(\): scheduling_strategy="):
        TaskOptions.parse("f.options()", scheduling_strategy=strategy)


def test_bad_affinity_keywords_are_refused() -> None:
    with pytest.raises(OptionsError, match="soft must be a bool, not str"):
        On("n1", soft="yes")  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="_spill_on_unavailable=True needs soft=True"):
        On("n1", _spill_on_unavailable=True)
    with pytest.raises(OptionsError, match="_fail_on_unavailable=True needs soft=False"):
        On("n1", soft=True, _fail_on_unavailable=True)
