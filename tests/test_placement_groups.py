"""Placement groups on a real 3-node cluster (head + 2 node agents, 2 CPUs each): each
strategy's layout, atomicity, actors in bundles, ready()/wait(), removal, lifetimes with the
job, lookup by name from another driver, a hub restart and a node SIGKILLed (last: it takes a
node away)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _drivers import run_driver
from _procs import end
from _wait import wait_for

import actorhub
from actorhub.cli.inspect import status_command
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ActorDiedError, OptionsError, TaskPlacementGroupRemoved
from actorhub.runtime.runtime import current
from actorhub.util.placement_group import (
    PlacementGroup,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@pytest.fixture(scope="module")
def three_nodes(shared_cluster: actorhub.ClusterContext, allowed_process_roots: set[int]) -> Iterator[dict[str, Any]]:
    session = Session(Path(shared_cluster.session_dir))
    processes = {}
    for _ in range(2):
        process = start_node(Config.load(num_cpus=2), session, shared_cluster.address)
        processes[process.pid] = process
        allowed_process_roots.add(process.pid)
    started = list(processes)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 3, "the nodes to join")
        yield {"context": shared_cluster, "processes": processes}
    finally:
        for process in processes.values():
            end(process)
        allowed_process_roots.difference_update(started)


def free_cpus() -> dict[str, float]:
    return {n.node_id: n.available_cpus for n in current().hub.cluster_status().nodes if n.alive}


def nodes_of(pg: PlacementGroup) -> list[str]:
    return [placement_group_table(pg)["bundles_to_node_id"][i] for i in range(pg.bundle_count)]


@actorhub.remote
def task_node() -> str:
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote
def sleep_then_node(seconds: float) -> str:
    time.sleep(seconds)
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote
def task_resources() -> list[str]:
    return list(actorhub.get_runtime_context().get_assigned_resources())


def died_of_removal(actor: Any) -> bool:
    """Whether a call to `actor` now fails because its group was removed (the kill is under way
    right after the removal's answer)."""
    try:
        actorhub.get(actor.node.remote(), timeout=30)
    except ActorDiedError as e:
        assert "was removed" in str(e)
        return True
    return False


@actorhub.remote(num_cpus=1)
class Where:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def group(self) -> str | None:
        pg = actorhub.util.get_current_placement_group()
        return pg.id.hex() if pg is not None else None

    def child_group(self) -> str | None:
        child = Where.options(num_cpus=0).remote()
        return actorhub.get(child.group.remote())

    def child_task_resources(self) -> list[str]:
        return sorted(actorhub.get(task_resources.remote()))


def test_each_strategy_lays_bundles_out_as_ray_does(three_nodes: dict[str, Any]) -> None:
    before = free_cpus()
    spread = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    pack = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
    assert spread.wait(20) and pack.wait(20)
    assert len(set(nodes_of(spread))) == 3
    assert len(set(nodes_of(pack))) == 1
    # Bundles' CPUs leave what everything else may use.
    assert sum(free_cpus().values()) == pytest.approx(sum(before.values()) - 3 - 1)
    remove_placement_group(spread)
    remove_placement_group(pack)
    wait_for(lambda: free_cpus() == before, "the removal to give the CPUs back")
    assert placement_group_table(spread)["state"] == "REMOVED"
    soft_pack = placement_group([{"CPU": 0.5}] * 3, strategy="PACK")
    soft_spread = placement_group([{"CPU": 0.25}] * 3, strategy="SPREAD")
    assert soft_pack.wait(20) and soft_spread.wait(20)
    assert len(set(nodes_of(soft_pack))) == 1
    assert len(set(nodes_of(soft_spread))) == 3
    # PACK shares nodes when no one node fits it all; SPREAD shares once distinct nodes run out.
    wide_pack = placement_group([{"CPU": 1.5}, {"CPU": 1.5}], strategy="PACK")
    wide_spread = placement_group([{"CPU": 0.1}] * 4, strategy="SPREAD")
    assert wide_pack.wait(20) and wide_spread.wait(20)
    assert len(set(nodes_of(wide_pack))) == 2 and len(set(nodes_of(wide_spread))) == 3
    for pg in (soft_pack, soft_spread, wide_pack, wide_spread):
        remove_placement_group(pg)
    wait_for(lambda: free_cpus() == before, "the removal to give the CPUs back")


def test_a_group_that_cannot_fully_fit_reserves_nothing_and_blocks_no_smaller_one(
    three_nodes: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    before = free_cpus()
    too_wide = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    too_big = placement_group([{"CPU": 2}, {"CPU": 1}], strategy="STRICT_PACK")
    busy = placement_group([{"CPU": 2}] * 3, strategy="SPREAD")  # fits only on an idle cluster
    assert busy.wait(20)
    blocked = placement_group([{"CPU": 1}], strategy="PACK")
    assert not blocked.wait(0.5)
    row = placement_group_table(too_wide)
    assert row["state"] == "PENDING" and row["stats"]["scheduling_state"] == "INFEASIBLE"
    assert "infeasible" in row["stats"]["pending_reason"]
    assert placement_group_table(blocked)["stats"]["pending_reason"].startswith("waiting for resources")
    capsys.readouterr()
    assert status_command(three_nodes["context"].address) == 0
    shown = capsys.readouterr().out
    assert f"{too_wide.id.hex()} STRICT_SPREAD PENDING: infeasible" in shown
    assert "_group_" not in shown.split("Actors:")[0]  # bundle names stay out of the nodes' resources
    remove_placement_group(busy)
    assert blocked.wait(20)
    small = placement_group([{"CPU": 1}], strategy="STRICT_PACK")
    assert small.wait(20)
    assert placement_group_table(too_big)["state"] == "PENDING"
    for pg in (too_wide, too_big, blocked, small):
        remove_placement_group(pg)
    wait_for(lambda: free_cpus() == before, "the CPUs to come back")


def test_actors_land_in_their_bundle_and_die_with_the_group(three_nodes: dict[str, Any]) -> None:
    before = free_cpus()
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert actorhub.get(pg.ready(), timeout=20) == pg
    first = Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
    # No CPUs: the bundle's CPU the other one leaves is for the task it captures.
    anywhere = Where.options(num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_capture_child_tasks=True)).remote()
    assert actorhub.get(first.node.remote(), timeout=30) == nodes_of(pg)[1]
    assert actorhub.get(anywhere.node.remote(), timeout=30) in nodes_of(pg)
    assert actorhub.get(first.group.remote()) == pg.id.hex()
    # Captured: what it creates without a strategy runs in the group too.
    assert actorhub.get(anywhere.child_group.remote(), timeout=30) == pg.id.hex()
    assert f"CPU_group_{pg.id.hex()}" in actorhub.get(anywhere.child_task_resources.remote(), timeout=30)
    # The bundles hold the CPUs; the actors in them take nothing more.
    assert sum(free_cpus().values()) == pytest.approx(sum(before.values()) - 2)
    # Bundle 1 is full: a second actor there waits, and so does one anywhere in the group once
    # the other bundle is taken too.
    other = Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    assert actorhub.get(other.node.remote(), timeout=30) == nodes_of(pg)[0]
    waiting = Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()
    with pytest.raises(actorhub.exceptions.GetTimeoutError):
        actorhub.get(waiting.node.remote(), timeout=1)
    with pytest.raises(OptionsError, match="out of range"):
        PlacementGroupSchedulingStrategy(pg, 2)
    with pytest.raises(OptionsError, match="cannot fit into bundle 0"):
        Where.options(num_cpus=2, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    remove_placement_group(pg)
    for actor in (first, anywhere, waiting, other):
        assert wait_for(lambda actor=actor: died_of_removal(actor), "the group's actor to die of its removal")
    wait_for(lambda: free_cpus() == before, "the removal to give the CPUs back")




def test_tasks_run_in_their_bundle(three_nodes: dict[str, Any]) -> None:
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(20)
    in_bundle = task_node.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1))
    anywhere = task_node.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg))
    assert set(actorhub.get([in_bundle.remote() for _ in range(4)], timeout=60)) == {nodes_of(pg)[1]}
    assert set(actorhub.get([anywhere.remote() for _ in range(8)], timeout=60)) <= set(nodes_of(pg))
    with pytest.raises(OptionsError, match="cannot fit into bundle 0"):
        task_node.options(num_cpus=2, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0))
    # Bundle 0 busy: the next task waits for it, and fails once the group is removed.
    busy = sleep_then_node.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote(3.0)
    queued = task_node.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    assert actorhub.wait([queued], timeout=1.0)[0] == []
    remove_placement_group(pg)
    with pytest.raises(TaskPlacementGroupRemoved, match="placement group was removed"):
        actorhub.get(queued, timeout=30)
    with pytest.raises(TaskPlacementGroupRemoved, match="removed while it ran"):
        actorhub.get(busy, timeout=30)  # as in Ray, a task running in the group is killed with it


def test_ready_resolves_once_the_group_fits(three_nodes: dict[str, Any]) -> None:
    blocker = placement_group([{"CPU": 2}] * 3, strategy="STRICT_SPREAD")
    assert blocker.wait(20)
    pg = placement_group([{"CPU": 1}])
    ready = pg.ready()
    assert actorhub.wait([ready], timeout=0.5)[0] == []
    assert not pg.wait(0.2)
    remove_placement_group(blocker)
    assert actorhub.get(ready, timeout=20) == pg
    remove_placement_group(pg)


@pytest.mark.parametrize(("bundles", "strategy", "message"), [
    ([], "PACK", "bundles must not be empty"),
    ([{}], "PACK", "bundle 0 .* asks for no resources"),
    ([{"CPU": 0}], "PACK", "asks for no resources"),
    ([{"CPU": -1}], "PACK", "must be a finite number >= 0"),
    ([{"CPU": 1}], "PACKED", "unknown strategy 'PACKED'"),
    ({"CPU": 1}, "PACK", "bundles must be a list"),
])
def test_bad_input_raises_naming_what_was_wrong(
    three_nodes: dict[str, Any], bundles: Any, strategy: str, message: str,
) -> None:
    with pytest.raises(OptionsError, match=message):
        placement_group(bundles, strategy=strategy)


def test_a_taken_name_is_refused(three_nodes: dict[str, Any]) -> None:
    pg = placement_group([{"CPU": 0.1}], name="taken")
    with pytest.raises(OptionsError, match="named 'taken' already exists"):
        placement_group([{"CPU": 0.1}], name="taken")
    assert get_placement_group("taken") == pg
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="Failed to look up placement group with name: taken"):
        wait_for(lambda: placement_group_table(pg)["state"] == "REMOVED", "the group to be removed")
        get_placement_group("taken")


def test_groups_end_with_their_job_unless_detached(three_nodes: dict[str, Any]) -> None:
    address = three_nodes["context"].address
    run_driver(f"""
        import actorhub
        from actorhub.util import placement_group
        actorhub.init(address={address!r}, namespace="pgs")
        assert placement_group([{{"CPU": 0.1}}], name="kept", lifetime="detached").wait(20)
        assert placement_group([{{"CPU": 0.1}}], name="gone").wait(20)
    """)
    out = run_driver(f"""
        import actorhub
        from actorhub.util import get_placement_group, placement_group_table, remove_placement_group
        actorhub.init(address={address!r}, namespace="pgs")
        kept = get_placement_group("kept")
        print(placement_group_table(kept)["state"])
        remove_placement_group(kept)
    """)
    assert out.stdout.strip().endswith("CREATED")
    groups = current().hub.list_placement_groups()
    gone = [g for g in groups if g.name == "gone"]
    assert gone and gone[0].state == "REMOVED"


def test_a_hub_restart_keeps_the_groups(three_nodes: dict[str, Any]) -> None:
    session = Path(three_nodes["context"].session_dir)
    before = free_cpus()
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(20)
    layout = nodes_of(pg)
    pid = int((session / "hub.pid").read_text())
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        try:
            return int((session / "hub.pid").read_text()) != pid and bool(current().hub.list_placement_groups())
        except (OSError, ValueError, actorhub.exceptions.ActorHubError):
            return False

    wait_for(back, "the hub to come back", timeout=60)
    assert placement_group_table(pg)["state"] == "CREATED" and nodes_of(pg) == layout
    # Once the nodes registered again, their bundles hold there again.
    wait_for(lambda: sum(free_cpus().values()) == pytest.approx(sum(before.values()) - 2),
             "the bundles' CPUs to be held after the restart", timeout=30)
    remove_placement_group(pg)
    wait_for(lambda: free_cpus() == before, "the CPUs to come back")


@actorhub.remote(num_gpus=1)
class Gpu:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def visible(self) -> tuple[str | None, list[int]]:
        return os.environ.get("CUDA_VISIBLE_DEVICES"), actorhub.get_gpu_ids()


def test_actors_in_a_gpu_bundle_see_the_bundles_gpus(
    three_nodes: dict[str, Any], allowed_process_roots: set[int],
) -> None:
    context = three_nodes["context"]
    process = start_node(Config.load(num_cpus=1, num_gpus=2), Session(Path(context.session_dir)), context.address)
    allowed_process_roots.add(process.pid)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 4, "the GPU node to join")
        pg = placement_group([{"GPU": 2, "CPU": 1}], strategy="STRICT_PACK")
        assert pg.wait(20)
        actors = [Gpu.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote() for _ in range(2)]
        seen = actorhub.get([a.visible.remote() for a in actors], timeout=60)
        assert sorted(seen) == [("0", [0]), ("1", [1])]
        remove_placement_group(pg)
        for actor in actors:
            wait_for(lambda actor=actor: died_of_removal(actor), "the group's actor to die of its removal")
    finally:
        end(process)
        allowed_process_roots.discard(process.pid)


def test_bundles_on_a_killed_node_are_rescheduled(three_nodes: dict[str, Any]) -> None:
    """Last in the module: it SIGKILLs one of the node agents."""
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(20)
    processes = three_nodes["processes"]
    by_node = {n.node_id: n.pid for n in current().hub.cluster_status().nodes}
    victim = next(node for node in nodes_of(pg) if by_node[node] in processes)
    actor = Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, nodes_of(pg).index(victim))).remote()
    assert actorhub.get(actor.node.remote(), timeout=30) == victim
    os.killpg(by_node[victim], signal.SIGKILL)
    processes.pop(by_node[victim]).wait()
    wait_for(lambda: victim not in nodes_of(pg) and placement_group_table(pg)["state"] == "CREATED",
             "the bundle to be rescheduled")
    assert len(set(nodes_of(pg))) == 2
    remove_placement_group(pg)
