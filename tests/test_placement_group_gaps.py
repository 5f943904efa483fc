"""Placement groups as Ray has them where actorhub once fell short (issue 12): tasks in a bundle
with GPUs get the bundle's GPU ids (never a GPU another task or actor holds), a task running
when its group is removed is killed and not run again, an actor that asks for nothing needs a
CPU of its bundle, and a restarted hub knows which bundle GPUs its actors hold.

One head (2 CPUs) and one node with 4 CPUs, 4 fake GPUs and 2 "special"; the hub restart is
the last test on it (it SIGKILLs the hub). Then the hub's side of it without processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import end
from _wait import wait_for

import actorhub
from actorhub._proto.v1 import common_pb2, hub_pb2, node_pb2
from actorhub.api.cluster import connected_runtime
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    OptionsError,
    TaskPlacementGroupRemoved,
    WorkerCrashedError,
)
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.bundles import group_request
from actorhub.hub.control_store import SQLiteControlStore
from actorhub.hub.records import HostedActor
from actorhub.namespaces.lookup import get_system_actor
from actorhub.runtime.runtime import current
from actorhub.tasks.lease_desk import desk_name
from actorhub.util.placement_group import placement_group, placement_group_table, remove_placement_group
from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup


@pytest.fixture(scope="module")
def gpu_node(shared_cluster: actorhub.ClusterContext, allowed_process_roots: set[int]) -> Iterator[str]:
    config = Config.load(num_cpus=4, num_gpus=4, resources={"special": 2})
    process = start_node(config, Session(Path(shared_cluster.session_dir)), shared_cluster.address)
    allowed_process_roots.add(process.pid)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 2, "the GPU node to join")
        yield next(n.node_id for n in current().hub.cluster_status().nodes if n.node_id != shared_cluster.node_id)
    finally:
        end(process)
        allowed_process_roots.discard(process.pid)


def free(node_id: str) -> dict[str, float]:
    node = next(n for n in current().hub.cluster_status().nodes if n.node_id == node_id)
    return {"CPU": node.available_cpus, **{k: v for k, v in node.available_resources if "_group_" not in k}}


@actorhub.remote(num_gpus=1)
def gpus_while(marker: str) -> tuple[list[int], str | None]:
    """Says it started (marker.started), holds while `marker` exists; its GPUs as it saw them."""
    Path(marker + ".started").touch()
    while os.path.exists(marker):
        time.sleep(0.05)
    return actorhub.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@actorhub.remote(max_retries=3)
def run_while(marker: str) -> str:
    """Appends a line to marker.runs at each start, then holds while `marker` exists."""
    with open(marker + ".runs", "a") as runs:
        runs.write(f"{os.getpid()}\n")
    while os.path.exists(marker):
        time.sleep(0.05)
    return "ended"


@actorhub.remote(num_gpus=1, num_cpus=0)
class GpuHolder:
    def gpus(self) -> tuple[list[int], str | None]:
        return actorhub.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@actorhub.remote
class Plain:
    def ping(self) -> str:
        return "pong"


def started(marker: Path) -> bool:
    return Path(str(marker) + ".started").exists()


def test_tasks_in_a_gpu_bundle_get_its_gpus_and_share_none(gpu_node: str, tmp_path: Path) -> None:
    outside = GpuHolder.remote()  # a GPU of the node, not of the bundle
    outside_ids, _ = actorhub.get(outside.gpus.remote(), timeout=60)
    pg = placement_group([{"GPU": 2, "CPU": 2}], strategy="STRICT_PACK")
    assert pg.wait(20)
    assert placement_group_table(pg)["bundles_to_node_id"][0] == gpu_node
    in_bundle = InGroup(pg, 0)
    markers = [tmp_path / f"task{i}" for i in range(3)]
    for marker in markers:
        marker.touch()
    refs = [gpus_while.options(scheduling_strategy=in_bundle).remote(str(m)) for m in markers[:2]]
    wait_for(lambda: all(started(m) for m in markers[:2]), "the tasks in the bundle to start")
    # Both bundle GPUs are lent: a third task and an actor of the bundle wait, GPUs free outside or not.
    third = gpus_while.options(scheduling_strategy=in_bundle).remote(str(markers[2]))
    actor = GpuHolder.options(scheduling_strategy=in_bundle).remote()
    with pytest.raises(GetTimeoutError):
        actorhub.get(actor.gpus.remote(), timeout=1.5)
    assert not started(markers[2])
    markers[0].unlink()
    first_ids, first_cuda = actorhub.get(refs[0], timeout=30)
    markers[1].unlink()
    second_ids, second_cuda = actorhub.get(refs[1], timeout=30)
    assert len(first_ids) == len(second_ids) == 1 and first_ids != second_ids
    assert (first_cuda, second_cuda) == (str(first_ids[0]), str(second_ids[0]))
    bundle_ids = sorted(first_ids + second_ids)
    assert not set(bundle_ids) & set(outside_ids)
    # What the tasks gave back goes on to the actor and the third task: one GPU each, of the bundle.
    actor_ids, actor_cuda = actorhub.get(actor.gpus.remote(), timeout=30)
    wait_for(lambda: started(markers[2]), "the third task to run")
    markers[2].unlink()
    third_ids, third_cuda = actorhub.get(third, timeout=30)
    assert sorted(actor_ids + third_ids) == bundle_ids and third_cuda == str(third_ids[0])
    assert actor_cuda == str(actor_ids[0])
    remove_placement_group(pg)
    actorhub.kill(outside)
    wait_for(lambda: free(gpu_node)["GPU"] == 4, "the node's GPUs to come back")


def test_a_running_task_dies_with_its_removed_group(gpu_node: str, tmp_path: Path) -> None:
    before = free(gpu_node)
    pg = placement_group([{"CPU": 2, "special": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(20)
    retried, once = tmp_path / "retried", tmp_path / "once"
    retried.touch()
    once.touch()
    in_bundle = InGroup(pg, 0)
    refs = [run_while.options(scheduling_strategy=in_bundle, resources={"special": 0.5}).remote(str(retried)),
            run_while.options(scheduling_strategy=in_bundle, max_retries=0).remote(str(once))]
    member = Plain.options(scheduling_strategy=InGroup(pg, 1)).remote()
    assert actorhub.get(member.ping.remote(), timeout=60) == "pong"
    wait_for(lambda: all(Path(f"{m}.runs").exists() for m in (retried, once)), "the tasks to start")
    # More of "special" than the bundle has left: its lease waits at the desk, until the removal.
    waiting = run_while.options(scheduling_strategy=in_bundle, resources={"special": 1}).remote(str(once))
    desk = get_system_actor(connected_runtime(), desk_name(gpu_node))
    wait_for(lambda: actorhub.get(desk.stats.remote())["waiting_for_resources"] == 1, "a lease to wait")
    pids = [int(Path(f"{m}.runs").read_text().split()[0]) for m in (retried, once)]
    remove_placement_group(pg)
    # Ray's outcome: the worker is destroyed; a task with retries left finds its group removed.
    with pytest.raises(TaskPlacementGroupRemoved, match="removed while it ran"):
        actorhub.get(refs[0], timeout=30)
    with pytest.raises(WorkerCrashedError, match="placement group was removed"):
        actorhub.get(refs[1], timeout=30)
    with pytest.raises(ActorDiedError, match="was removed"):
        actorhub.get(member.ping.remote(), timeout=30)
    with pytest.raises(TaskPlacementGroupRemoved):
        actorhub.get(waiting, timeout=30)
    wait_for(lambda: actorhub.get(desk.stats.remote())["waiting_for_resources"] == 0, "no lease to wait")
    assert retried.exists() and once.exists()  # they did not run to their end
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    time.sleep(1.0)  # a retry, if there were one, would have started by now
    assert [len(Path(f"{m}.runs").read_text().split()) for m in (retried, once)] == [1, 1]
    # The leases went back to the desk, and what the group held to the node.
    wait_for(lambda: free(gpu_node) == before, "the group's resources to come back")


def test_an_actor_that_asks_for_nothing_needs_a_cpu_of_its_bundle(gpu_node: str) -> None:
    no_cpu = placement_group([{"special": 1}])
    assert no_cpu.wait(20)
    with pytest.raises(OptionsError, match="needs 1 CPU to be placed"):
        Plain.options(scheduling_strategy=InGroup(no_cpu, 0)).remote()
    # num_cpus=0 asks for nothing, even to be placed: it goes there.
    zero = Plain.options(num_cpus=0, scheduling_strategy=InGroup(no_cpu, 0)).remote()
    assert actorhub.get(zero.ping.remote(), timeout=60) == "pong"
    mixed = placement_group([{"CPU": 1}, {"special": 1}], strategy="STRICT_PACK")
    assert mixed.wait(20)
    held = Plain.options(scheduling_strategy=InGroup(mixed, 1)).remote()
    info = wait_for(lambda: current().hub.actor_info(held.actor_id).pending_reason and
                    current().hub.actor_info(held.actor_id), "a pending reason")
    assert info.state == "PENDING" and info.infeasible and "needs 1 CPU to be placed" in info.pending_reason
    # In the bundle with a CPU: placed, holding none, so more of them fit as in Ray.
    placed = [Plain.options(scheduling_strategy=InGroup(mixed, 0)).remote() for _ in range(2)]
    assert actorhub.get([a.ping.remote() for a in placed], timeout=60) == ["pong", "pong"]
    # Its CPU held by an actor that asks for it: the next one waits for it to be free.
    holder = Plain.options(num_cpus=1, scheduling_strategy=InGroup(mixed, 0)).remote()
    assert actorhub.get(holder.ping.remote(), timeout=60) == "pong"
    waiting = Plain.options(scheduling_strategy=InGroup(mixed)).remote()
    with pytest.raises(GetTimeoutError):
        actorhub.get(waiting.ping.remote(), timeout=1.5)
    actorhub.kill(holder)
    assert actorhub.get(waiting.ping.remote(), timeout=30) == "pong"
    assert current().hub.actor_info(held.actor_id).state == "PENDING"
    remove_placement_group(no_cpu)
    remove_placement_group(mixed)


def test_a_restarted_hub_keeps_the_bundle_gpus_its_actors_hold(
    shared_cluster: actorhub.ClusterContext, gpu_node: str,
) -> None:
    """Last: it SIGKILLs the hub."""
    outside = GpuHolder.remote()
    outside_ids, _ = actorhub.get(outside.gpus.remote(), timeout=60)
    pg = placement_group([{"GPU": 2, "CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(20)
    first = GpuHolder.options(scheduling_strategy=InGroup(pg, 0)).remote()
    first_ids, _ = actorhub.get(first.gpus.remote(), timeout=60)
    session = Path(shared_cluster.session_dir)
    pid = int((session / "hub.pid").read_text())
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        try:
            nodes = current().hub.cluster_status().nodes
            return int((session / "hub.pid").read_text()) != pid and any(
                n.node_id == gpu_node and any("_group_" in k for k, _ in n.resources) for n in nodes)
        except (OSError, ValueError, actorhub.exceptions.ActorHubError):
            return False

    wait_for(back, "the hub to come back with the GPU node", timeout=60)
    # The bundle's other GPU, never the first actor's; a third has none left in the bundle.
    second = GpuHolder.options(scheduling_strategy=InGroup(pg, 0)).remote()
    second_ids, _ = actorhub.get(second.gpus.remote(), timeout=60)
    assert actorhub.get(first.gpus.remote(), timeout=30)[0] == first_ids
    assert len(second_ids) == 1 and second_ids != first_ids and not set(second_ids) & set(outside_ids)
    third = GpuHolder.options(scheduling_strategy=InGroup(pg, 0)).remote()
    with pytest.raises(GetTimeoutError):
        actorhub.get(third.gpus.remote(), timeout=1.5)
    # Outside the bundle: the node's one GPU left, neither the bundle's nor the outside actor's.
    another = GpuHolder.remote()
    another_ids, _ = actorhub.get(another.gpus.remote(), timeout=60)
    assert sorted(first_ids + second_ids + outside_ids + another_ids) == [0, 1, 2, 3]
    remove_placement_group(pg)
    for actor in (outside, another):
        actorhub.kill(actor)
    wait_for(lambda: free(gpu_node)["GPU"] == 4, "the node's GPUs to come back")


# ---- the hub's bookkeeping without processes (fast, exact) --------------------------------------

GROUP = "ef" * 18


def _gpu_actor(actor_id: str, group_id: str = "", amount: float = 1.0) -> common_pb2.ActorSpec:
    resources = group_request(group_id, 0, 0.0, {"GPU": amount}) if group_id else {"GPU": amount}
    return common_pb2.ActorSpec(actor_id=actor_id, class_name="A", namespace="ns", owner_job_id="00000001",
                                detached=True, placement_group_id=group_id, resources=resources)


def _place(table: ActorTable, spec: common_pb2.ActorSpec) -> tuple[int, ...] | None:
    """The GPU ids the actor was started with; None while it waits."""
    _, _, decisions = table.create_actor(spec, False)
    if not decisions.placements:
        return None
    reply = node_pb2.NodeStartActorReply(ok=True, address="w", worker_id=f"wk-{spec.actor_id}", pid=7)
    table.start_finished(decisions.placements[0], reply)
    return decisions.placements[0].gpu_ids


def test_bundle_gpus_survive_the_store_and_a_restart_counts_their_holders(tmp_path: Path) -> None:
    table = ActorTable()
    table.register_node("n0", "127.0.0.1:9000", 4, 100, resources={"GPU": 4})
    assert _place(table, _gpu_actor("outside")) == (0,)
    table.create_group(hub_pb2.PlacementGroupSpec(
        placement_group_id=GROUP, strategy="PACK", namespace="ns", creator_job_id="00000001", detached=True,
        bundles=[hub_pb2.PlacementGroupBundle(resources={"GPU": 2, "CPU": 1})]))
    assert _place(table, _gpu_actor("first", GROUP)) == (1,)
    # A task's claim gets the bundle's other GPU, and says which bundle; the next claim waits.
    claim = group_request(GROUP, -1, 0.0, {"GPU": 1})
    answer = table.report_loans("n0", 0.0, claim=claim)[3]
    assert answer.granted and answer.gpu_ids == (2,) and answer.bundle_index == 0
    lent = [hub_pb2.PlacementGroupGpuLoan(placement_group_id=GROUP, bundle_index=0, gpu_id=2, amount=1.0)]
    assert not table.report_loans("n0", 0.0, claim, claim=claim, bundle_loans=lent)[3].granted
    # The desk's report (absolute) gives it back: the bundle's GPU is free again.
    table.report_loans("n0", 0.0, bundle_loans=[])
    store = SQLiteControlStore.in_session(tmp_path)
    store.save(table.take_dirty())
    snapshot = store.load()
    store.close()
    assert snapshot.placement_groups[0].gpu_ids == ((1, 2),)
    restarted = ActorTable()
    restarted.restore(snapshot)
    restarted.register_node("n0", "127.0.0.1:9000", 4, 100, resources={"GPU": 4}, hosted=[
        HostedActor("outside", 0, "w", "wk-outside", 7, False, (0,)),
        HostedActor("first", 0, "w", "wk-first", 7, False, (1,))])
    # The bundle holds 1 and 2 again, 1 its first actor's: a second gets 2, a third waits.
    assert _place(restarted, _gpu_actor("second", GROUP)) == (2,)
    assert _place(restarted, _gpu_actor("third", GROUP)) is None
    assert _place(restarted, _gpu_actor("elsewhere")) == (3,)
    # The first actor's process ends: its GPU goes to the one that waits, still of the bundle.
    out = restarted.worker_exited("first", 0, "it exited")
    assert [(p.actor_id, p.gpu_ids) for p in out.placements] == [("third", (1,))]
