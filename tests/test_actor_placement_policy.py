"""The hub's choice of node for an actor under each scheduling strategy, without processes
(hub/placement_policy.py, through the actor table)."""

from __future__ import annotations

from typing import Any

import pytest

from actorhub._proto.v1 import common_pb2, node_pb2
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.records import ALIVE, DEAD, PENDING, RESTARTING, Placement

UNSCHEDULABLE = common_pb2.ERROR_KIND_ACTOR_UNSCHEDULABLE
_ids = iter(range(1, 10_000))


def spec(**fields: Any) -> common_pb2.ActorSpec:
    return common_pb2.ActorSpec(actor_id=f"a{next(_ids)}", class_name="Worker", namespace="ns",
                                owner_job_id="00000001", **fields)


def place(table: ActorTable, s: common_pb2.ActorSpec) -> str:
    """The node the actor was placed on, started there ("" if it waits)."""
    _, _, decisions = table.create_actor(s, False)
    if not decisions.placements:
        return ""
    [p] = decisions.placements
    started(table, p)
    return p.node_id


def started(table: ActorTable, p: Placement) -> None:
    reply = node_pb2.NodeStartActorReply(ok=True, address=f"w-{p.actor_id}", worker_id="w", pid=1)
    table.start_finished(p, reply)


@pytest.fixture
def table() -> ActorTable:
    t = ActorTable(placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    for i in (1, 2, 3):
        t.register_node(f"n{i}", f"node{i}:1", 4.0, 10 + i)
    return t


def test_default_stays_on_the_callers_node_until_half_used_then_the_least_loaded(table: ActorTable) -> None:
    assert [place(table, spec(num_cpus=1, caller_node_id="n2")) for _ in range(2)] == ["n2", "n2"]
    # n2 is half used: no longer below the threshold, so the least loaded nodes come first.
    assert [place(table, spec(num_cpus=1, caller_node_id="n2")) for _ in range(4)] == ["n1", "n3", "n1", "n3"]
    # All half used: the caller's node is as loaded as any, so it wins again.
    assert place(table, spec(num_cpus=1, caller_node_id="n2")) == "n2"


def test_default_actors_that_hold_no_cpus_all_go_to_the_callers_node(table: ActorTable) -> None:
    # Ray's default actor: 1 CPU to be placed, none held, so its node never gets busier.
    nodes = {place(table, spec(placement_cpus=1, caller_node_id="n3")) for _ in range(20)}
    assert nodes == {"n3"}


def test_tasks_lent_cpus_make_the_callers_node_busy(table: ActorTable) -> None:
    table.report_lent("n1", 3.0)  # its desk lent 3 of 4 CPUs to tasks
    assert place(table, spec(placement_cpus=1, caller_node_id="n1")) == "n2"


def test_actors_that_ask_for_nothing_spread_by_actor_count(table: ActorTable) -> None:
    nodes = [place(table, spec(caller_node_id="n1")) for _ in range(6)]
    assert sorted(nodes) == ["n1", "n1", "n2", "n2", "n3", "n3"]


def test_spread_goes_round_robin_over_the_nodes_that_fit(table: ActorTable) -> None:
    assert [place(table, spec(spread=True, caller_node_id="n1")) for _ in range(5)] == ["n1", "n2", "n3", "n1", "n2"]
    big = [place(table, spec(spread=True, num_cpus=4)) for _ in range(3)]
    assert big == ["n3", "n1", "n2"]  # from where the cursor was
    # Now every node is full for a CPU: it waits, then takes the first that frees.
    assert place(table, spec(spread=True, num_cpus=1)) == ""


def test_hard_affinity_waits_for_its_busy_node_and_fails_when_it_cannot_hold(table: ActorTable) -> None:
    assert place(table, spec(node_id="n2", num_cpus=4)) == "n2"
    waiting = spec(node_id="n2", num_cpus=1)
    assert place(table, waiting) == ""
    assert table.get_actor(waiting.actor_id).state == PENDING
    for bad, reason in ((spec(node_id="gone"), "names node gone, which is not alive"),
                        (spec(node_id="n1", num_cpus=8), "could never fit it"),
                        (spec(node_id="n2", num_cpus=1, node_affinity_fail_on_unavailable=True),
                         "has no room for it now")):
        assert place(table, bad) == ""
        info = table.get_actor(bad.actor_id)
        assert (info.state, info.death_cause.kind) == (DEAD, UNSCHEDULABLE)
        assert reason in info.death_cause.message


def test_soft_affinity_waits_for_a_live_node_and_falls_back_when_it_is_gone_or_too_small(
        table: ActorTable) -> None:
    assert place(table, spec(node_id="n3", node_affinity_soft=True, num_cpus=4)) == "n3"
    waiting = spec(node_id="n3", node_affinity_soft=True, num_cpus=1, caller_node_id="n1")
    assert place(table, waiting) == ""  # Ray: a live node that fits is waited for, even when soft
    assert place(table, spec(node_id="n3", node_affinity_soft=True, node_affinity_spill_on_unavailable=True,
                             num_cpus=1, caller_node_id="n1")) == "n1"
    assert place(table, spec(node_id="gone", node_affinity_soft=True, num_cpus=1, caller_node_id="n2")) == "n2"
    assert place(table, spec(node_id="n1", node_affinity_soft=True, num_cpus=8)) == ""  # fits nowhere: pending
    # Its node dying: a soft-pinned actor restarts elsewhere, a hard-pinned one dies.
    soft = spec(node_id="n2", node_affinity_soft=True, max_restarts=1, caller_node_id="n2")
    hard = spec(node_id="n2", max_restarts=1)
    assert place(table, soft) == place(table, hard) == "n2"
    decisions = table.node_died("n2", 1)
    [moved] = decisions.placements
    assert moved.actor_id == soft.actor_id and moved.node_id != "n2"
    started(table, moved)
    assert table.get_actor(soft.actor_id).state == ALIVE
    assert table.get_actor(hard.actor_id).state == DEAD


def test_a_hard_pinned_actor_waiting_to_restart_when_its_node_dies_has_died(table: ActorTable) -> None:
    pinned = spec(node_id="n2", max_restarts=2)
    assert place(table, pinned) == "n2"
    [again] = table.worker_exited(pinned.actor_id, 0, "its worker crashed").placements
    table.start_failed(again, "UNAVAILABLE")  # n2 avoided for a moment: it waits to restart there
    assert table.get_actor(pinned.actor_id).state == RESTARTING
    table.node_died("n2", 1)
    info = table.get_actor(pinned.actor_id)
    assert (info.state, info.death_cause.kind) == (DEAD, common_pb2.ERROR_KIND_ACTOR_DIED)
    assert "it cannot be restarted" in info.death_cause.message and "not alive" in info.death_cause.message
