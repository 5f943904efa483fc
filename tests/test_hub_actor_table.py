"""The hub: its actor table as a pure state machine, its store, and its service in-process
against a fake node agent (no subprocesses)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc, node_pb2, node_pb2_grpc
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.control_store import (
    JOB_COUNTER,
    ActorRow,
    SQLiteControlStore,
    StoreBatch,
    StoreRefusedError,
    StoreWriter,
    open_store,
)
from actorhub.hub.records import (
    ALIVE,
    DEAD,
    PENDING,
    RESTARTING,
    Decisions,
    DuplicateActorId,
    HostedActor,
    HubShuttingDown,
    InvalidSpec,
    NameTaken,
    Placement,
    UnknownActor,
    UnknownJob,
    UnknownNode,
    exit_cause,
)
from actorhub.hub.service import HubServicer
from actorhub.wire.server import ServerLoop, bind, make_server
from actorhub.wire.transport import AsyncChannelPool, open_channel

ACTOR_DIED = common_pb2.ERROR_KIND_ACTOR_DIED


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_spec(
    actor_id: str = "a1",
    *,
    name: str = "",
    namespace: str = "ns",
    max_restarts: int = 0,
    num_cpus: float = 0.0,
    owner_job_id: str = "00000001",
    owner_actor_id: str = "",
    detached: bool = False,
) -> common_pb2.ActorSpec:
    return common_pb2.ActorSpec(
        actor_id=actor_id, class_name="Counter", name=name, namespace=namespace,
        max_restarts=max_restarts, num_cpus=num_cpus, owner_job_id=owner_job_id,
        owner_actor_id=owner_actor_id, detached=detached, max_task_retries=2, max_pending_calls=7,
        is_async=True, methods=[common_pb2.MethodMeta(name="incr", num_returns=1)],
    )


def ok_reply(p: Placement, pid: int = 4242) -> node_pb2.NodeStartActorReply:
    return node_pb2.NodeStartActorReply(
        ok=True, address=f"w-{p.actor_id}-{p.incarnation}", worker_id=f"wk{p.incarnation}", pid=pid)


def create(table: ActorTable, spec: common_pb2.ActorSpec, get_if_exists: bool = False) -> Decisions:
    _, existed, decisions = table.create_actor(spec, get_if_exists)
    assert not existed
    return decisions


def create_alive(table: ActorTable, spec: common_pb2.ActorSpec, pid: int = 4242) -> Placement:
    [p] = create(table, spec).placements
    assert not table.start_finished(p, ok_reply(p, pid))
    assert table.get_actor(spec.actor_id).state == ALIVE
    return p


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def table(clock: FakeClock) -> ActorTable:
    t = ActorTable(clock=clock, placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    t.register_node("n1", "node1:1", 4.0, 11)
    return t


# ---- creation, names, validation -------------------------------------------------------


def test_actor_waits_for_a_node_then_becomes_alive_with_spec_fields() -> None:
    t = ActorTable()
    info, existed, decisions = t.create_actor(make_spec(name="c"), False)
    assert (info.state, existed, decisions.placements) == (PENDING, False, [])
    [p] = t.register_node("n1", "node1:1", 2.0, 11).placements
    assert (p.actor_id, p.incarnation, p.node_id, p.node_address) == ("a1", 0, "n1", "node1:1")
    assert t.start_finished(p, ok_reply(p)).placements == []
    info = t.get_actor("a1")
    assert (info.state, info.address, info.pid, info.node_id, info.worker_id if False else "") == (
        ALIVE, "w-a1-0", 4242, "n1", "")
    assert (info.name, info.namespace, info.class_name, info.owner_job_id) == ("c", "ns", "Counter", "00000001")
    assert (info.max_task_retries, info.max_pending_calls, info.is_async, info.detached) == (2, 7, True, False)
    assert [m.name for m in info.methods] == ["incr"]
    assert not info.HasField("death_cause")


def test_create_validates_and_refuses_duplicates(table: ActorTable) -> None:
    with pytest.raises(InvalidSpec, match="empty actor_id"):
        table.create_actor(make_spec(""), False)
    with pytest.raises(InvalidSpec, match="num_cpus"):
        table.create_actor(make_spec(num_cpus=-1), False)
    with pytest.raises(InvalidSpec, match="max_restarts"):
        table.create_actor(make_spec(max_restarts=-2), False)
    [placement] = create(table, make_spec("a1", name="x")).placements
    # The same request again (a caller retrying after losing the reply) is the same actor,
    # placed once; another actor under that id is refused.
    info, existed, again = table.create_actor(make_spec("a1", name="x"), False)
    assert (info.actor_id, existed, again.placements) == ("a1", False, [])
    with pytest.raises(DuplicateActorId, match="a1"):
        table.create_actor(make_spec("a1", name="y"), False)
    assert placement.actor_id == "a1"


def test_name_directory(table: ActorTable) -> None:
    create(table, make_spec("a1", name="svc"))
    with pytest.raises(NameTaken) as err:
        table.create_actor(make_spec("a2", name="svc"), False)
    assert str(err.value) == "an actor named 'svc' already exists in namespace 'ns'"
    info, existed, decisions = table.create_actor(make_spec("a3", name="svc"), True)
    assert (info.actor_id, existed, decisions.placements) == ("a1", True, [])
    create(table, make_spec("a4", name="svc", namespace="other"))
    assert table.named_actor("svc", "ns").actor_id == "a1"  # type: ignore[union-attr]
    assert table.named_actor("svc", "nope") is None
    # A dead actor frees its name for a new one.
    table.request_kill("a1", no_restart=True)
    assert table.named_actor("svc", "ns") is None
    create(table, make_spec("a5", name="svc"))
    assert table.named_actor("svc", "ns").actor_id == "a5"  # type: ignore[union-attr]


def test_concurrent_get_or_create_makes_exactly_one_actor(table: ActorTable) -> None:
    def attempt(i: int) -> tuple[str, bool]:
        info, existed, _ = table.create_actor(make_spec(f"id{i}", name="single"), True)
        return info.actor_id, existed

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(50)))
    assert len({actor_id for actor_id, _ in results}) == 1
    assert sum(1 for _, existed in results if not existed) == 1
    assert len(table.list_actors("ns", False, False, True)) == 1


# ---- constructor failure, restarts, kills ----------------------------------------------


def test_constructor_failure_is_dead_with_its_error(table: ActorTable) -> None:
    [p] = create(table, make_spec(name="c", num_cpus=1)).placements
    error = common_pb2.ErrorInfo(type_name="builtins.ValueError", message="bad arg", traceback="TB",
                                 kind=common_pb2.ERROR_KIND_APPLICATION)
    table.start_finished(p, node_pb2.NodeStartActorReply(ok=False, error=error))
    info = table.get_actor("a1")
    assert info.state == DEAD
    assert info.death_cause.kind == ACTOR_DIED
    assert info.death_cause.message == (
        "The actor Counter (a1) died: its constructor raised builtins.ValueError: bad arg")
    assert info.death_cause.traceback == "TB"
    assert table.named_actor("c", "ns") is None
    assert table.cluster_status().nodes[0].available_cpus == 4.0


def test_worker_exit_restarts_within_budget_then_dies(table: ActorTable) -> None:
    p0 = create_alive(table, make_spec(max_restarts=2))
    [p1] = table.worker_exited("a1", 0, exit_cause(4242, 3, 0)).placements
    info = table.get_actor("a1")
    assert (info.state, info.incarnation, info.num_restarts, p1.incarnation) == (RESTARTING, 1, 1, 1)
    assert table.worker_exited("a1", 0, "stale").placements == []  # the old incarnation again
    assert table.start_finished(p0, ok_reply(p0)).kills  # a late reply for incarnation 0: orphan
    table.start_finished(p1, ok_reply(p1))
    [p2] = table.worker_exited("a1", 1, "x").placements
    table.start_finished(p2, ok_reply(p2, pid=77))
    assert table.worker_exited("a1", 2, exit_cause(77, 0, 9)).placements == []
    info = table.get_actor("a1")
    assert (info.state, info.num_restarts, info.incarnation) == (DEAD, 2, 2)
    assert info.death_cause.message == (
        "The actor Counter (a1) died: its worker process (pid 77) was killed by signal 9 (SIGKILL)"
        " (no restarts left, max_restarts=2)")


def test_no_restart_budget_and_unlimited(table: ActorTable) -> None:
    create_alive(table, make_spec("a1", max_restarts=0))
    table.worker_exited("a1", 0, exit_cause(5, 1, 0))
    assert table.get_actor("a1").death_cause.message == (
        "The actor Counter (a1) died: its worker process (pid 5) exited with code 1")
    create_alive(table, make_spec("a2", max_restarts=-1))
    for incarnation in range(5):
        [p] = table.worker_exited("a2", incarnation, "crash").placements
        table.start_finished(p, ok_reply(p))
    assert table.get_actor("a2").num_restarts == 5


def test_exit_cause_text() -> None:
    assert exit_cause(10, 0, 15) == "its worker process (pid 10) was killed by signal 15 (SIGTERM)"
    assert exit_cause(10, 2, 0) == "its worker process (pid 10) exited with code 2"
    assert "unknown signal" in exit_cause(10, 0, 200)


def test_kill_alive_actor_is_idempotent_with_the_node_report(table: ActorTable) -> None:
    create_alive(table, make_spec(name="k", max_restarts=5))
    plan = table.request_kill("a1", no_restart=True)
    assert plan.target is not None and (plan.target.incarnation, plan.target.node_address) == (0, "node1:1")
    assert table.get_actor("a1").state == ALIVE  # until the process is gone
    table.worker_exited("a1", 0, exit_cause(4242, 0, 9), "n1")  # the node's report comes first
    assert table.worker_exited("a1", 0, "from KillActor", "n1").placements == []
    info = table.get_actor("a1")
    assert info.state == DEAD and info.death_cause.kind == ACTOR_DIED
    assert info.death_cause.message == "The actor Counter (a1) was killed by kill()"
    assert table.request_kill("a1", no_restart=True).target is None
    with pytest.raises(UnknownActor):
        table.request_kill("zzz", no_restart=True)


def test_kill_pending_actor_dies_at_once_and_orphan_is_killed(table: ActorTable) -> None:
    [p] = create(table, make_spec(num_cpus=2)).placements
    plan = table.request_kill("a1", no_restart=True)
    assert plan.target is None
    assert table.get_actor("a1").state == DEAD
    assert table.cluster_status().nodes[0].available_cpus == 4.0
    late = table.start_finished(p, ok_reply(p))
    assert [(k.actor_id, k.incarnation, k.node_address) for k in late.kills] == [("a1", 0, "node1:1")]


def test_kill_with_restart_restarts(table: ActorTable) -> None:
    create_alive(table, make_spec(max_restarts=1))
    plan = table.request_kill("a1", no_restart=False)
    assert plan.target is not None and "killed by kill()" in plan.cause
    [p] = table.worker_exited("a1", 0, plan.cause).placements
    assert (table.get_actor("a1").state, p.incarnation) == (RESTARTING, 1)
    table.start_finished(p, ok_reply(p))
    plan = table.request_kill("a1", no_restart=False)
    assert plan.target is not None
    table.worker_exited("a1", 1, plan.cause)
    assert table.get_actor("a1").death_cause.message == (
        "The actor Counter (a1) died: its worker process (pid 4242) was killed by kill()"
        " (no restarts left, max_restarts=1)")


def test_exit_reported_while_start_in_flight_is_applied_after_it(table: ActorTable) -> None:
    [p] = create(table, make_spec(max_restarts=1)).placements
    table.worker_exited("a1", 0, "crashed right after init", "n1")
    assert table.get_actor("a1").state == PENDING
    [p1] = table.start_finished(p, ok_reply(p)).placements
    assert (table.get_actor("a1").state, p1.incarnation) == (RESTARTING, 1)


# ---- scheduling ------------------------------------------------------------------------


def test_cpus_are_reserved_and_freed(table: ActorTable) -> None:
    create_alive(table, make_spec("a1", num_cpus=3))
    assert create(table, make_spec("a2", num_cpus=2)).placements == []
    assert table.get_actor("a2").state == PENDING
    assert table.cluster_status().nodes[0].available_cpus == 1.0
    plan = table.request_kill("a1", no_restart=True)
    assert plan.target is not None
    [p] = table.worker_exited("a1", 0, "gone").placements
    assert p.actor_id == "a2"
    assert table.cluster_status().nodes[0].available_cpus == 2.0


def test_cpus_lent_to_tasks_hold_off_actors_that_reserve_them(table: ActorTable) -> None:
    decisions, reserved, wanted = table.report_lent("n1", 3.0)  # the desk lends 3 of n1's 4
    assert (decisions.placements, reserved, wanted) == ([], 0.0, 0.0)
    create_alive(table, make_spec("a0"))  # reserves no CPUs: placed all the same
    create_alive(table, make_spec("a1", num_cpus=1))
    assert create(table, make_spec("a2", num_cpus=2)).placements == []
    # It waits for n1's tasks: the desk is told to lend none of those 2 CPUs meanwhile.
    assert table.report_lent("n1", 3.0)[1:] == (1.0, 2.0)
    assert table.report_lent("n1", 2.0)[0].placements == []  # one CPU back: not enough yet
    decisions, reserved, wanted = table.report_lent("n1", 1.0)
    assert [p.actor_id for p in decisions.placements] == ["a2"]
    assert (reserved, wanted) == (3.0, 0.0)
    assert table.report_lent("nobody", 1.0)[1:] == (0.0, 0.0)


def test_pending_actors_say_why_and_an_infeasible_one_is_placed_once_a_node_fits(table: ActorTable) -> None:
    create(table, make_spec("big", num_cpus=64))
    info = table.get_actor("big")
    assert (info.state, info.infeasible) == (PENDING, True)
    assert info.pending_reason == "infeasible: requires {CPU: 64} but no node has that many (largest: 4.0 CPUs)"
    create_alive(table, make_spec("a1", num_cpus=3))
    create(table, make_spec("a2", num_cpus=2))
    info = table.get_actor("a2")
    assert not info.infeasible
    assert info.pending_reason == (
        "waiting for resources: requires {CPU: 2} but all nodes that fit it have their CPUs claimed by actors"
        " or tasks (most available: 1.0 of 4.0 CPUs on node n1)")
    [p] = table.register_node("n2", "node2:1", 2.5, 12).placements  # fits a2, not the big one
    assert p.actor_id == "a2"
    assert (table.get_actor("a2").pending_reason, table.get_actor("a2").infeasible) == ("", False)
    assert table.get_actor("big").pending_reason.endswith("(largest: 4.0 CPUs)")
    [p] = table.register_node("n3", "node3:1", 64, 13).placements
    assert p.actor_id == "big"
    info = table.get_actor("big")
    assert (info.pending_reason, info.infeasible) == ("", False)


def test_pending_reasons_without_nodes_when_pinned_and_when_tasks_hold_the_cpus() -> None:
    t = ActorTable()
    create(t, make_spec("a1", num_cpus=1))
    info = t.get_actor("a1")
    assert (info.pending_reason, info.infeasible) == ("waiting for resources: requires {CPU: 1} and no node is alive",
                                                      False)
    pinned = make_spec("p1", num_cpus=0.5)
    pinned.node_id = "gone"
    create(t, pinned)
    # As in Ray, a hard node affinity that cannot hold fails the actor (ActorUnschedulableError).
    info = t.get_actor("p1")
    assert (info.state, info.death_cause.kind) == (DEAD, common_pb2.ERROR_KIND_ACTOR_UNSCHEDULABLE)
    assert info.death_cause.message.endswith("names node gone, which is not alive")
    t.register_node("n1", "node1:1", 2.0, 11)
    pinned = make_spec("p2", num_cpus=3)
    pinned.node_id = "n1"
    create(t, pinned)
    info = t.get_actor("p2")
    assert (info.state, info.death_cause.kind) == (DEAD, common_pb2.ERROR_KIND_ACTOR_UNSCHEDULABLE)
    assert "could never fit it: it requires {CPU: 3} and the node has {CPU: 2}" in info.death_cause.message
    assert t.get_actor("a1").state == PENDING and t.get_actor("a1").pending_reason == ""  # placing
    t.report_lent("n1", 1.0)  # its desk lent n1's other CPU to tasks
    create(t, make_spec("a2", num_cpus=1))  # a1 holds one of n1's CPUs, tasks the other
    info = t.get_actor("a2")
    assert (info.pending_reason, info.infeasible) == (
        "waiting for resources: requires {CPU: 1}; node n1 has them once its tasks give back the CPUs lent"
        " to them", False)
    assert t.request_kill("a2", no_restart=True).target is None
    assert (t.get_actor("a2").state, t.get_actor("a2").pending_reason) == (DEAD, "")


def test_least_loaded_node_first(table: ActorTable) -> None:
    table.register_node("n2", "node2:1", 4.0, 12)
    nodes = [create(table, make_spec(f"a{i}")).placements[0].node_id for i in range(4)]
    assert sorted(nodes) == ["n1", "n1", "n2", "n2"]
    assert create(table, make_spec("big", num_cpus=3)).placements[0].node_id in ("n1", "n2")


def test_unreachable_node_is_avoided_then_placement_gives_up(table: ActorTable, clock: FakeClock) -> None:
    table.register_node("n2", "node2:1", 4.0, 12)
    [p] = create(table, make_spec()).placements
    [retry] = table.start_failed(p, "UNAVAILABLE").placements
    assert retry.node_id != p.node_id and retry.incarnation == 0
    again = table.start_failed(retry, "UNAVAILABLE")
    assert again.placements == [] and again.retry_after == pytest.approx(1.0)
    clock.now += 1.5
    [p3] = table.schedule_pending().placements
    clock.now += 30
    assert table.start_failed(p3, "UNAVAILABLE: connection refused").placements == []
    info = table.get_actor("a1")
    assert info.state == DEAD
    assert info.death_cause.message == (
        "The actor Counter (a1) died: it could not be placed: UNAVAILABLE: connection refused")


# ---- nodes and jobs ---------------------------------------------------------------------


def test_node_death_restarts_or_kills_its_actors(table: ActorTable) -> None:
    generation = table.lease_node("n1")
    create_alive(table, make_spec("a1", max_restarts=1))
    create_alive(table, make_spec("a2"))
    [p3] = create(table, make_spec("a3", max_restarts=0)).placements  # StartActor in flight
    table.register_node("n2", "node2:1", 1.0, 12)
    assert table.node_died("n1", generation - 1) == Decisions()  # an older registration's lease
    decisions = table.node_died("n1", generation)
    assert [(p.actor_id, p.node_id, p.incarnation) for p in decisions.placements] == [("a1", "n2", 1)]
    assert table.get_actor("a2").death_cause.message == "The actor Counter (a2) died: its node n1 died"
    assert table.get_actor("a3").state == DEAD
    assert table.start_finished(p3, ok_reply(p3)).kills  # the stale creation is cleaned up
    assert [n.alive for n in table.cluster_status().nodes] == [False, True]
    with pytest.raises(UnknownNode):
        table.lease_node("n1")


def test_an_actor_pinned_to_a_node_that_died_is_dead_not_restarting_forever(table: ActorTable) -> None:
    generation = table.lease_node("n1")
    table.register_node("n2", "node2:1", 4.0, 12)
    spec = make_spec("a1", max_restarts=-1)
    spec.node_id = "n1"
    create_alive(table, spec)
    decisions = table.node_died("n1", generation)
    assert decisions.placements == []  # not moved to n2: it may only run on n1
    rec = table.get_actor("a1")
    assert rec.state == DEAD
    assert rec.death_cause.message == "The actor Counter (a1) died: its node n1 died, and it is pinned to that node"


def test_node_reregistering_with_new_pid_replaces_the_old_agent(table: ActorTable) -> None:
    generation = table.lease_node("n1")
    create_alive(table, make_spec("a0", num_cpus=1))
    table.register_node("n1", "node1:1", 4.0, 11)  # the same agent again: nothing changes
    assert table.get_actor("a0").state == ALIVE
    assert table.lease_node("n1") == generation
    assert table.cluster_status().nodes[0].available_cpus == 3.0
    table.request_kill("a0", no_restart=True)
    table.worker_exited("a0", 0, "x")
    create_alive(table, make_spec("a1"))
    table.register_node("n1", "node1:2", 4.0, 99)
    assert table.get_actor("a1").state == DEAD
    assert table.cluster_status().nodes[0].address == "node1:2"


def test_job_registration() -> None:
    t = ActorTable()
    first = t.register_job("", 1, "drv:1", False)
    assert (first.job_id, first.node_id) == ("00000001", "")
    assert first.namespace.startswith("anon-") and len(first.namespace) == 17
    t.register_node("n1", "a:1", 1, 1)
    t.register_node("n2", "a:2", 1, 2)
    second = t.register_job("team", 2, "drv:2", False)
    assert (second.job_id, second.namespace, second.node_id) == ("00000002", "team", "n1")
    assert t.cluster_status().live_jobs == 2
    with pytest.raises(UnknownJob):
        t.check_job("00000009")


def test_job_end_kills_its_non_detached_actors_and_their_children(table: ActorTable) -> None:
    job = table.register_job("ns", 1, "drv", owns_cluster=True).job_id
    create_alive(table, make_spec("root", owner_job_id=job))
    create_alive(table, make_spec("child", owner_job_id=job, owner_actor_id="root"))
    create(table, make_spec("grandchild", owner_job_id=job, owner_actor_id="child", num_cpus=99))
    create_alive(table, make_spec("keeper", owner_job_id=job, detached=True))
    create_alive(table, make_spec("kid", owner_job_id=job, owner_actor_id="keeper"))
    create(table, make_spec("pending-root", owner_job_id=job, num_cpus=99))
    decisions = table.job_ended(job)
    assert decisions.shutdown_cluster
    assert [k.actor_id for k in decisions.kills] == ["root"]
    assert table.get_actor("pending-root").death_cause.message == (
        "The actor Counter (pending-root) died: its owner job 00000001 ended")
    cascade = table.worker_exited("root", 0, "killed")
    assert table.get_actor("root").death_cause.message == (
        "The actor Counter (root) died: its owner job 00000001 ended")
    assert [k.actor_id for k in cascade.kills] == ["child"]
    table.worker_exited("child", 0, "killed")
    assert table.get_actor("child").death_cause.message == (
        "The actor Counter (child) died: its owner actor root died")
    assert table.get_actor("grandchild").state == DEAD
    assert table.get_actor("keeper").state == ALIVE and table.get_actor("kid").state == ALIVE
    assert table.job_ended(job) == Decisions()
    # An actor created for a job that has already ended does not outlive it.
    _, _, late = table.create_actor(make_spec("late", owner_job_id=job), False)
    assert late.placements == [] and table.get_actor("late").state == DEAD


# ---- queries, waiting, shutdown, persistence -------------------------------------------


def test_list_actors_filters(table: ActorTable) -> None:
    create(table, make_spec("a1", name="x"))
    create(table, make_spec("a2"))
    create(table, make_spec("a3", name="y", namespace="other"))
    table.request_kill("a2", no_restart=True)

    def ids(infos: Iterable[common_pb2.ActorInfo]) -> list[str]:
        return sorted(i.actor_id for i in infos)

    assert ids(table.list_actors("ns", False, False, False)) == ["a1"]
    assert ids(table.list_actors("ns", False, False, True)) == ["a1", "a2"]
    assert ids(table.list_actors("", True, True, False)) == ["a1", "a3"]
    assert ids(table.cluster_status().actors) == ["a1", "a3"]


def test_wait_actor(table: ActorTable) -> None:
    [p] = create(table, make_spec(max_restarts=1)).placements
    t0 = time.monotonic()
    assert table.wait_actor("a1", 0, 0.1).state == PENDING
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, table.start_finished, (p, ok_reply(p))).start()
    assert table.wait_actor("a1", 0, 5).state == ALIVE
    [p1] = table.worker_exited("a1", 0, "crash").placements
    threading.Timer(0.05, table.start_finished, (p1, ok_reply(p1))).start()
    info = table.wait_actor("a1", 1, 0)
    assert (info.state, info.incarnation) == (ALIVE, 1)
    assert table.wait_actor("a1", 0, 5, keep_waiting=lambda: False).incarnation == 1
    with pytest.raises(UnknownActor):
        table.wait_actor("nope", 0, 1)


def test_dead_actors_drop_their_class_and_only_the_newest_are_kept(clock: FakeClock) -> None:
    table = ActorTable(clock=clock, poll_s=0.05, max_dead_actors=3)
    table.register_node("n1", "node1:1", 4.0, 11)
    placements = []
    for i in range(6):
        spec = make_spec(f"d{i}", name=f"n{i}", max_restarts=1)
        spec.pickled_class, spec.init_args = b"class-bytes" * 100, b"args-bytes"
        placements.append(create_alive(table, spec))
    # A restart still has what it needs to start the actor again.
    [again] = table.worker_exited("d0", 0, "crash").placements
    assert (again.spec.pickled_class, again.spec.init_args) == (b"class-bytes" * 100, b"args-bytes")
    assert not table.start_finished(again, ok_reply(again))
    table.request_kill("d0", no_restart=True)
    table.worker_exited("d0", 1, "killed")
    # Dead: the record loses the class and the arguments, not what lookups answer with.
    info = table.wait_actor("d0", 0, 5)
    assert (info.state, info.class_name, info.name, [m.name for m in info.methods]) == (
        DEAD, "Counter", "n0", ["incr"])
    assert info.death_cause.kind == ACTOR_DIED
    assert table._actors["d0"].spec.pickled_class == b""
    assert table._actors["d0"].spec.init_args == b""
    assert again.spec.pickled_class  # a placement handed out earlier is left alone
    for i in range(1, 5):
        table.request_kill(f"d{i}", no_restart=True)
        table.worker_exited(f"d{i}", 0, "killed")
    # Five dead, three kept: the two oldest deaths are unknown actors now.
    for gone in ("d0", "d1"):
        with pytest.raises(UnknownActor):
            table.get_actor(gone)
        with pytest.raises(UnknownActor):
            table.wait_actor(gone, 0, 0.1)
        with pytest.raises(UnknownActor):
            table.request_kill(gone, no_restart=True)
    for kept in ("d2", "d3", "d4"):
        assert table.get_actor(kept).state == DEAD
        assert table.wait_actor(kept, 0, 5).state == DEAD
    assert table.get_actor("d5").state == ALIVE  # the living are never dropped
    assert sorted(i.actor_id for i in table.list_actors("ns", False, False, True)) == ["d2", "d3", "d4", "d5"]
    assert table.named_actor("n0", "ns") is None
    create_alive(table, make_spec("d6", name="n0"))  # the dropped actor's name is free
    assert len(table._actors) == 5


def test_dead_actor_history_bound_is_checked() -> None:
    with pytest.raises(ValueError, match="max_dead_actors"):
        ActorTable(max_dead_actors=-1)
    table = ActorTable(max_dead_actors=0)
    create(table, make_spec("a1"))  # pending: no node yet
    table.request_kill("a1", no_restart=True)
    with pytest.raises(UnknownActor):
        table.get_actor("a1")
    assert len(ActorTable()._actors) == 0 and ActorTable()._max_dead_actors == 1000


def test_shutdown_wakes_waiters_and_stops_placement(table: ActorTable) -> None:
    create(table, make_spec(num_cpus=99))
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            table.wait_actor("a1", 0, 0)
        except HubShuttingDown as err:
            errors.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    assert table.begin_shutdown() == ["node1:1"]
    assert table.begin_shutdown() is None
    waiter.join(2)
    assert len(errors) == 1
    assert table.register_node("n2", "node2:1", 100, 1).placements == []
    with pytest.raises(HubShuttingDown):
        table.create_actor(make_spec("a2"), False)


def test_store_round_trip_and_version_guard(table: ActorTable, tmp_path: Path) -> None:
    store = SQLiteControlStore.in_session(tmp_path)
    create_alive(table, make_spec(name="p"))
    table.register_job("ns", 1, "d", False)
    batch = table.take_dirty()
    store.save(batch)
    assert not table.take_dirty()
    [row] = store.load().actors
    assert (row.actor_id, row.state, row.spec.name, row.version) == ("a1", ALIVE, "p", batch.actors[0].version)
    stale = ActorRow("a1", row.spec, DEAD, 0, 0, "", "", None, row.version - 1)
    store.save(StoreBatch(actors=[stale]))
    assert store.load().actors[0].state == ALIVE
    table.request_kill("a1", True)
    table.worker_exited("a1", 0, "x")
    store.save(table.take_dirty())
    snapshot = store.load()
    [row] = snapshot.actors
    assert row.state == DEAD and row.death_cause is not None and "kill()" in row.death_cause.message
    # Dead: the class and arguments are gone from the disk too.
    assert not row.spec.pickled_class and not row.spec.init_args
    assert [(j.job_id, j.alive) for j in snapshot.jobs] == [("00000001", True)]
    assert snapshot.counters[JOB_COUNTER] == 1 and [n.node_id for n in snapshot.nodes] == ["n1"]
    store.close()


def test_store_writer_writes_behind_keeps_the_newest_and_tells_when_written(
    table: ActorTable, tmp_path: Path
) -> None:
    store = SQLiteControlStore.in_session(tmp_path)
    writer = StoreWriter(store)
    create_alive(table, make_spec(name="p", max_restarts=1))
    table.register_job("ns", 1, "d", False)
    first = table.take_dirty()
    table.worker_exited("a1", 0, "crash")
    second = table.take_dirty()
    writer.save(second)
    ticket = writer.save(first)  # late, older: the newer version queued or written stays
    assert writer.save(StoreBatch()) == ticket
    written = threading.Event()
    writer.when_written(ticket, written.set)
    assert written.wait(5) and writer.flush(5)
    [row] = store.load().actors
    assert (row.state, row.incarnation, row.version) == (RESTARTING, 1, second.actors[0].version)
    assert [j.job_id for j in store.load().jobs] == ["00000001"]
    table.request_kill("a1", True)
    writer.save(table.take_dirty())
    writer.close()  # writes what is queued first
    assert store.load().actors[0].state == DEAD
    late = threading.Event()
    writer.when_written(1, late.set)  # already written: at once
    assert late.is_set()
    store.close()


def test_store_refuses_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    missing = tmp_path / "gone.sqlite3"
    with pytest.raises(StoreRefusedError, match="does not exist"):
        open_store(missing, must_exist=True)
    fresh = open_store(missing, must_exist=False)
    assert fresh.load().actors == [] and (missing.stat().st_mode & 0o777) == 0o600
    fresh.close()
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreRefusedError, match="not a readable SQLite database"):
        open_store(garbage, must_exist=True)
    foreign = tmp_path / "foreign.sqlite3"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreRefusedError, match="no actorhub schema"):
        open_store(foreign, must_exist=True)
    broken = tmp_path / "broken.sqlite3"
    store = open_store(broken, must_exist=False)
    store.close()
    con = sqlite3.connect(broken)
    con.execute("INSERT INTO actors VALUES ('a9', x'ffff', 1, 0, 0, '', '', NULL, 1, '', 0, 0, '')")
    con.commit()
    con.close()
    with pytest.raises(StoreRefusedError, match="actor a9 does not parse"):
        open_store(broken, must_exist=True).load()


def test_store_kv(tmp_path: Path) -> None:
    store = SQLiteControlStore.in_session(tmp_path)
    store.kv_put("a/1", b"x")
    store.kv_put("a/2", b"y")
    store.kv_put("a%", b"z")
    store.kv_put("b/1", b"w")
    assert store.kv_get("a/1") == b"x" and store.kv_get("zz") is None
    assert store.kv_list("a/") == ["a/1", "a/2"]
    assert store.kv_list("a%") == ["a%"]
    assert store.kv_delete("a/1") and not store.kv_delete("a/1")
    assert store.kv_list() == ["a%", "a/2", "b/1"]
    store.close()


# ---- a restarted hub: restore from the store, then reconcile with the nodes ------------

def restored(table: ActorTable, clock: FakeClock, tmp_path: Path) -> tuple[ActorTable, Decisions]:
    """A new table from what `table` wrote to a store, as a restarted hub has it."""
    store = SQLiteControlStore.in_session(tmp_path)
    store.save(table.take_dirty())
    snapshot = store.load()
    store.close()
    fresh = ActorTable(clock=clock, placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    return fresh, fresh.restore(snapshot)


def test_restore_keeps_names_restart_counts_job_ids_and_cpu_reservations(
    table: ActorTable, clock: FakeClock, tmp_path: Path
) -> None:
    table.register_job("ns", 1, "d", False)
    create_alive(table, make_spec("a1", name="svc", detached=True, max_restarts=3, num_cpus=1))
    table.worker_exited("a1", 0, "crash")
    [p] = table.schedule_pending().placements or [Placement("a1", 1, make_spec("a1"), "n1", "node1:1")]
    table.start_finished(p, ok_reply(p))
    create(table, make_spec("a2", name="gone"))
    table.request_kill("a2", True)
    fresh, decisions = restored(table, clock, tmp_path)
    assert not decisions
    info = fresh.named_actor("svc", "ns")
    assert info is not None and (info.actor_id, info.state, info.num_restarts, info.incarnation) == ("a1", ALIVE, 1, 1)
    assert fresh.named_actor("gone", "ns") is None and fresh.get_actor("a2").state == DEAD
    assert fresh.register_job("ns", 2, "d2", False).job_id == "00000002"
    assert fresh.unconfirmed() == ([("n1", 1)], ["00000001", "00000002"])
    # The CPU a1 holds stays held: a 4-CPU actor does not fit beside it.
    assert create(fresh, make_spec("a3", num_cpus=4)).placements == []


def test_reconcile_keeps_reported_actors_restarts_missing_ones_and_kills_orphans(
    table: ActorTable, clock: FakeClock, tmp_path: Path
) -> None:
    create_alive(table, make_spec("kept", max_restarts=1))
    create_alive(table, make_spec("lost", max_restarts=1))
    create_alive(table, make_spec("doomed"))
    fresh, _ = restored(table, clock, tmp_path)
    hosted = [HostedActor("kept", 0, "w-kept-0", "wk0", 4242), HostedActor("stranger", 5, "w-x", "wk9", 99)]
    out = fresh.register_node("n1", "node1:1", 4.0, 11, hosted)
    assert fresh.get_actor("kept").state == ALIVE and fresh.get_actor("kept").address == "w-kept-0"
    lost = fresh.get_actor("lost")
    assert (lost.state, lost.incarnation, lost.num_restarts) == (RESTARTING, 1, 1)
    doomed = fresh.get_actor("doomed")
    assert doomed.state == DEAD and "ended while the hub was away" in doomed.death_cause.message
    assert [(p.actor_id, p.incarnation) for p in out.placements] == [("lost", 1)]
    assert [(k.actor_id, k.incarnation) for k in out.kills] == [("stranger", 5)]


def test_an_actor_being_started_when_the_hub_died_ends_up_alive_once(
    table: ActorTable, clock: FakeClock, tmp_path: Path
) -> None:
    create(table, make_spec("done"))
    create(table, make_spec("busy"))
    create(table, make_spec("never"))
    fresh, decisions = restored(table, clock, tmp_path)
    assert not decisions.placements  # each waits for its node's report
    hosted = [HostedActor("done", 0, "w-done", "wk1", 1), HostedActor("busy", 0, starting=True)]
    out = fresh.register_node("n1", "node1:1", 4.0, 11, hosted)
    assert fresh.get_actor("done").state == ALIVE and fresh.get_actor("done").address == "w-done"
    # Sent again: the node joins the start under way ("busy") or makes the first ("never").
    assert sorted(p.actor_id for p in out.placements) == ["busy", "never"] and not out.kills
    for p in out.placements:
        fresh.start_finished(p, ok_reply(p))
    assert {fresh.get_actor(a).state for a in ("busy", "never")} == {ALIVE}


def test_a_kill_in_progress_survives_the_restart(table: ActorTable, clock: FakeClock, tmp_path: Path) -> None:
    create_alive(table, make_spec("a1", max_restarts=5))
    plan = table.request_kill("a1", True)
    assert plan.target is not None
    fresh, _ = restored(table, clock, tmp_path)
    fresh.worker_exited("a1", 0, "killed")
    assert fresh.get_actor("a1").state == DEAD  # not restarted


def test_a_retried_kill_of_an_incarnation_spares_its_successor(table: ActorTable) -> None:
    create_alive(table, make_spec("a1", max_restarts=5))
    assert table.request_kill("a1", False, incarnation=1).target is None  # not born yet: nothing
    plan = table.request_kill("a1", False, incarnation=0)
    assert plan.target is not None
    [p] = table.worker_exited("a1", 0, plan.cause).placements
    table.start_finished(p, ok_reply(p))
    assert table.request_kill("a1", False, incarnation=0).target is None
    assert table.get_actor("a1").incarnation == 1 and table.get_actor("a1").state == ALIVE


def test_nodes_and_actors_of_a_node_gone_before_the_restart(clock: FakeClock, tmp_path: Path) -> None:
    table = ActorTable(clock=clock)
    table.register_node("n1", "node1:1", 4.0, 11)
    table.register_node("n2", "node2:1", 4.0, 12)
    create_alive(table, make_spec("a1", max_restarts=1))
    node = table.get_actor("a1").node_id
    fresh, _ = restored(table, clock, tmp_path)
    # Its node never reconnects: taken as dead, as a broken lease is; a1 restarts elsewhere.
    out = fresh.node_died(node, 1)
    assert [p.node_id for p in out.placements] != [node] and fresh.get_actor("a1").state == RESTARTING


# ---- the service, in-process against a fake node agent ---------------------------------


class FakeNode(node_pb2_grpc.NodeServicer):
    def __init__(self, hub: hub_pb2_grpc.HubStub, node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self.started: list[tuple[str, int]] = []
        self.killed: list[tuple[str, int]] = []
        self.shutdowns = 0
        self.fail_constructor = False

    def StartActor(
        self, request: node_pb2.NodeStartActorRequest, context: grpc.ServicerContext
    ) -> node_pb2.NodeStartActorReply:
        self.started.append((request.spec.actor_id, request.incarnation))
        if self.fail_constructor:
            return node_pb2.NodeStartActorReply(ok=False, error=common_pb2.ErrorInfo(
                type_name="builtins.RuntimeError", message="boom", traceback="tb"))
        return node_pb2.NodeStartActorReply(ok=True, address="127.0.0.1:1", worker_id="w", pid=1000)

    def KillWorker(self, request: node_pb2.KillWorkerRequest, context: grpc.ServicerContext) -> common_pb2.Empty:
        self.killed.append((request.actor_id, request.incarnation))
        # A real agent reports the exit as well; the hub must take the two as one.
        self.hub.ReportWorkerExit(hub_pb2.WorkerExitReport(
            node_id=self.node_id, actor_id=request.actor_id, incarnation=request.incarnation,
            pid=1000, signal=9))
        return common_pb2.Empty()

    def Shutdown(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> common_pb2.Empty:
        self.shutdowns += 1
        return common_pb2.Empty()

    def RegisterWorker(
        self, request: node_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> common_pb2.Empty:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake node forks no workers")

    def GetNodeInfo(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> node_pb2.NodeInfo:
        return node_pb2.NodeInfo(node_id=self.node_id)


class Cluster:
    def __init__(self) -> None:
        self.token = "secret"
        self.stopped = threading.Event()
        self.server = ServerLoop(self.token, name="test-hub")
        self.servicer = HubServicer(
            ActorTable(poll_s=0.05), None, AsyncChannelPool(self.token), self.server.loop, self.stopped.set)
        hub_pb2_grpc.add_HubServicer_to_server(self.servicer, self.server.server)
        self.address = self.server.bind("127.0.0.1", 0)
        self.server.start()
        self.channel = open_channel(self.address, self.token)
        self.hub = hub_pb2_grpc.HubStub(self.channel)
        self.node = FakeNode(self.hub, "n1")
        self.node_server = make_server(self.token)
        node_pb2_grpc.add_NodeServicer_to_server(self.node, self.node_server)
        self.node_address = bind(self.node_server, "127.0.0.1", 0)
        self.node_server.start()
        self.hub.RegisterNode(hub_pb2.RegisterNodeRequest(
            node_id="n1", address=self.node_address, num_cpus=2, pid=1))

    def open_lease(self, kind: str, lease_id: str) -> Any:
        """The lease's call: iterate it for events, cancel() it to break it."""
        before = self.servicer.open_leases
        method = self.hub.NodeLease if kind == "node" else self.hub.JobLease
        call = method(hub_pb2.LeaseRequest(id=lease_id))
        deadline = time.monotonic() + 5
        while self.servicer.open_leases <= before:
            assert time.monotonic() < deadline, "the lease never reached the hub"
            time.sleep(0.01)
        return call

    def wait_dead(self, actor_id: str) -> common_pb2.ActorInfo:
        """WaitActor returns at once for an ALIVE actor; a kill in progress needs polling."""
        deadline = time.monotonic() + 5
        while True:
            info = self.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id=actor_id, timeout_s=0.05))
            if info.state == DEAD:
                return info
            assert time.monotonic() < deadline, f"{actor_id} did not die"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.submit(self.servicer.shutdown_cluster()).result(10)
        self.server.submit(self.server.server.stop(None)).result(10)
        self.node_server.stop(None).wait()
        self.server.submit(self.servicer.close()).result(10)
        self.server.stop(0)
        self.channel.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.close()


def test_service_create_wait_kill(cluster: Cluster) -> None:
    hub = cluster.hub
    reply = hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec(name="svc")))
    assert (reply.actor.state, reply.existed) == (PENDING, False)
    info = hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="a1", timeout_s=5))
    assert (info.state, info.address, info.node_id) == (ALIVE, "127.0.0.1:1", "n1")
    assert hub.GetNamedActor(hub_pb2.GetNamedActorRequest(name="svc", namespace="ns")).actor_id == "a1"
    with pytest.raises(grpc.RpcError) as err:
        hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec("a2", name="svc")))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.details() == "an actor named 'svc' already exists in namespace 'ns'"
    again = hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec("a3", name="svc"), get_if_exists=True))
    assert (again.actor.actor_id, again.existed) == ("a1", True)
    hub.KillActor(hub_pb2.KillActorRequest(actor_id="a1", no_restart=True))
    info = hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="a1", timeout_s=1))
    assert info.state == DEAD and info.death_cause.message == "The actor Counter (a1) was killed by kill()"
    assert cluster.node.killed == [("a1", 0)]
    for call, request, code in [
        (hub.GetNamedActor, hub_pb2.GetNamedActorRequest(name="svc", namespace="ns"), "NOT_FOUND"),
        (hub.WaitActor, hub_pb2.WaitActorRequest(actor_id="zz"), "NOT_FOUND"),
        (hub.KillActor, hub_pb2.KillActorRequest(actor_id="zz"), "NOT_FOUND"),
        (hub.CreateActor, hub_pb2.CreateActorRequest(spec=make_spec("")), "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(request)  # type: ignore[operator]
        assert err.value.code().name == code


def test_service_constructor_error_and_concurrent_get_or_create(cluster: Cluster) -> None:
    cluster.node.fail_constructor = True
    cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec("bad")))
    info = cluster.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="bad", timeout_s=5))
    assert info.death_cause.message == (
        "The actor Counter (bad) died: its constructor raised builtins.RuntimeError: boom")
    cluster.node.fail_constructor = False

    def get_or_create(i: int) -> bool:
        spec = make_spec(f"g{i}", name="one")
        return bool(cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=spec, get_if_exists=True)).existed)

    with ThreadPoolExecutor(16) as pool:
        existed = list(pool.map(get_or_create, range(50)))
    assert existed.count(False) == 1
    assert len([s for s in cluster.node.started if s[0].startswith("g")]) == 1


def test_service_job_lease_end_kills_the_jobs_actors(cluster: Cluster) -> None:
    job = cluster.hub.RegisterJob(hub_pb2.RegisterJobRequest(namespace="", driver_pid=5))
    assert job.job_id == "00000001" and job.node_id == "n1" and job.namespace.startswith("anon-")
    lease = cluster.open_lease("job", job.job_id)
    cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec("j1", owner_job_id=job.job_id)))
    cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec("d1", owner_job_id=job.job_id,
                                                                      detached=True)))
    for actor_id in ("j1", "d1"):
        cluster.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id=actor_id, timeout_s=5))
    lease.cancel()
    info = cluster.wait_dead("j1")
    assert cluster.hub.GetClusterStatus(common_pb2.Empty()).live_jobs == 0
    assert info.death_cause.message == "The actor Counter (j1) died: its owner job 00000001 ended"
    assert cluster.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="d1", timeout_s=0.1)).state == ALIVE
    with pytest.raises(grpc.RpcError) as err:
        next(iter(cluster.hub.JobLease(hub_pb2.LeaseRequest(id="00000042"))))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_service_node_lease_break_is_node_death(cluster: Cluster) -> None:
    lease = cluster.open_lease("node", "n1")
    cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec()))
    cluster.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="a1", timeout_s=5))
    lease.cancel()
    info = cluster.hub.WaitActor(hub_pb2.WaitActorRequest(actor_id="a1", timeout_s=5, min_incarnation=1))
    assert info.death_cause.message == "The actor Counter (a1) died: its node n1 died"
    assert not cluster.hub.GetClusterStatus(common_pb2.Empty()).nodes[0].alive


def test_service_shutdown_ends_leases_and_long_polls(cluster: Cluster) -> None:
    lease = cluster.open_lease("node", "n1")
    cluster.hub.CreateActor(hub_pb2.CreateActorRequest(spec=make_spec(num_cpus=50)))
    waiting = cluster.hub.WaitActor.future(hub_pb2.WaitActorRequest(actor_id="a1"))
    cluster.hub.Shutdown(common_pb2.Empty())
    cluster.hub.Shutdown(common_pb2.Empty())  # idempotent
    assert [event.shutdown for event in lease] == [True]
    with pytest.raises(grpc.RpcError) as err:
        waiting.result(timeout=5)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, "hub shutting down")
    assert cluster.node.shutdowns == 1
    assert cluster.stopped.wait(5)
