"""Tasks ask for GPUs, memory and custom resources as actors do: lease desks lend a task's
whole vector, claimed from the hub, so tasks and actors never share a GPU; a task sees its GPUs
as CUDA_VISIBLE_DEVICES and get_gpu_ids(); what no node fits waits until one joins."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import end
from _wait import wait_for

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import OptionsError
from actorhub.runtime.runtime import current
from actorhub.wire.records import NodeStatus

MIB = 1024 * 1024


@actorhub.remote
def where() -> dict[str, Any]:
    context = actorhub.get_runtime_context()
    return {
        "node": context.get_node_id(),
        "gpus": actorhub.get_gpu_ids(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "accelerators": context.get_accelerator_ids()["GPU"],
        "assigned": context.get_assigned_resources(),
    }


@actorhub.remote
def hold(seconds: float) -> tuple[float, float, list[int]]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time(), actorhub.get_gpu_ids()


@actorhub.remote
class GpuActor:
    def gpus(self) -> list[int]:
        return actorhub.get_gpu_ids()

    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()


@actorhub.remote(max_retries=1)
def crash_once(marker: str) -> list[int]:
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker dies: the task runs again, on the same lease and its GPU
    return actorhub.get_gpu_ids()


@actorhub.remote
def hold_while(marker: str) -> str:
    """Says it started (marker.started), then holds while `marker` exists."""
    Path(marker + ".started").touch()
    while os.path.exists(marker):
        time.sleep(0.05)
    return actorhub.get_runtime_context().get_node_id()


def most_at_once(spans: list[tuple[float, float, list[int]]]) -> int:
    return max(sum(1 for s, e, _ in spans if s <= start < e) for start, _, _ in spans)


@pytest.fixture(scope="module")
def gpu_node(shared_cluster: actorhub.ClusterContext, allowed_process_roots: set[int]) -> Iterator[NodeStatus]:
    """A second node with 4 CPUs, 2 (fake) GPUs and 2 "special"; the head has neither."""
    config = Config.load(num_cpus=4, num_gpus=2, resources={"special": 2}, memory=512 * MIB)
    process = start_node(config, Session(Path(shared_cluster.session_dir)), shared_cluster.address)
    allowed_process_roots.add(process.pid)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 2, "the GPU node to join")
        yield next(n for n in current().hub.cluster_status().nodes if n.node_id != shared_cluster.node_id)
    finally:
        end(process)
        allowed_process_roots.discard(process.pid)


@pytest.mark.parametrize(("options", "message"), [
    ({"num_gpus": -1}, "num_gpus must be a finite number >= 0"),
    ({"num_gpus": float("nan")}, "num_gpus must be a finite number >= 0"),
    ({"num_gpus": 1.5}, "num_gpus above 1 must be a whole number"),
    ({"memory": -5}, "memory must be a finite number >= 0"),
    ({"resources": {"CPU": 1}}, "'CPU' has its own option"),
    ({"resources": {"GPU": 1}}, "'GPU' has its own option"),
    ({"resources": {"special": float("inf")}}, "resources['special'] must be a finite number"),
])
def test_bad_resource_options_of_a_task_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=next(iter(options))) as raised:
        where.options(**options)
    assert message in str(raised.value)


def test_gpu_and_custom_tasks_run_on_the_node_that_has_them_and_see_their_gpus(
    shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus
) -> None:
    whole = actorhub.get(where.options(num_gpus=1).remote(), timeout=60)
    assert whole["node"] == gpu_node.node_id and len(whole["gpus"]) == 1
    assert whole["cuda"] == str(whole["gpus"][0]) and whole["accelerators"] == [str(whole["gpus"][0])]
    assert whole["assigned"] == {"CPU": 1.0, "GPU": 1.0}
    two = actorhub.get(where.options(num_gpus=2, num_cpus=0).remote(), timeout=60)
    assert sorted(two["gpus"]) == [0, 1] and two["cuda"] in ("0,1", "1,0") and two["assigned"] == {"GPU": 2.0}
    half = actorhub.get(where.options(num_gpus=0.5).remote(), timeout=60)
    assert len(half["gpus"]) == 1 and half["assigned"] == {"CPU": 1.0, "GPU": 0.5}
    special = actorhub.get(where.options(resources={"special": 1}, memory=64 * MIB).remote(), timeout=60)
    assert special["node"] == gpu_node.node_id and special["gpus"] == [] and special["cuda"] is None
    assert special["assigned"] == {"CPU": 1.0, "special": 1.0, "memory": 64.0 * MIB}
    # A CPU-only task after them, on the same executors: no GPUs, no CUDA_VISIBLE_DEVICES left over.
    plain = actorhub.get([where.remote() for _ in range(6)], timeout=60)
    assert all(p["gpus"] == [] and p["cuda"] is None and p["assigned"] == {"CPU": 1.0} for p in plain)


def test_fractional_gpu_tasks_pack_onto_one_gpu(shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus) -> None:
    spans = actorhub.get([hold.options(num_gpus=0.5, num_cpus=0).remote(1.0) for _ in range(4)], timeout=60)
    assert most_at_once(spans) == 4  # 4 halves on 2 GPUs: all at once
    assert all(len(ids) == 1 for _, _, ids in spans)
    per_gpu = [sum(1 for _, _, ids in spans if ids == [gpu]) for gpu in (0, 1)]
    assert per_gpu == [2, 2]


def test_gpu_tasks_never_exceed_the_nodes_gpus(shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus) -> None:
    spans = actorhub.get([hold.options(num_gpus=1).remote(1.5) for _ in range(3)], timeout=60)
    assert most_at_once(spans) == 2
    for s1, e1, ids1 in spans:  # two tasks that ran at once had different GPUs
        for s2, e2, ids2 in spans:
            if (s1, e1) != (s2, e2) and s1 < e2 and s2 < e1:
                assert ids1 != ids2
    # Memory is lent as any resource: 2 "special" there, but memory for one task at a time.
    heavy = {"resources": {"special": 1}, "memory": 300 * MIB}
    assert most_at_once(actorhub.get([hold.options(**heavy).remote(0.8) for _ in range(2)], timeout=60)) == 1
    # Leases given back, the hub has it all free again.
    wait_for(lambda: actorhub.available_resources().get("GPU") == 2.0, "the tasks' GPUs to come back")


def test_tasks_and_actors_never_share_a_whole_gpu(
        shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus) -> None:
    first = GpuActor.options(num_gpus=1).remote()
    actor_gpu = actorhub.get(first.gpus.remote(), timeout=60)
    # One GPU is left for tasks: two of them go one after the other, on the other GPU.
    spans = actorhub.get([hold.options(num_gpus=1).remote(0.8) for _ in range(2)], timeout=60)
    assert most_at_once(spans) == 1 and all(ids != actor_gpu for _, _, ids in spans)
    # While a task holds the other GPU, an actor that wants one waits for it, then gets it.
    running = hold.options(num_gpus=1).remote(2.0)
    wait_for(lambda: actorhub.available_resources().get("GPU", 0.0) == 0.0, "the task to take its GPU")
    second = GpuActor.options(num_gpus=1).remote()
    task_gpu = actorhub.get(running, timeout=60)[2]
    assert actorhub.get(second.gpus.remote(), timeout=60) == task_gpu != actor_gpu
    # With both GPUs held by actors, a GPU task waits until one is gone.
    late = hold.options(num_gpus=1).remote(0.0)
    ready, _ = actorhub.wait([late], timeout=1.5)
    assert not ready
    actorhub.kill(first)
    assert actorhub.get(late, timeout=60)[2] == actor_gpu
    actorhub.kill(second)


def test_a_task_asking_for_the_head_node_runs_there(
        shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus) -> None:
    head = {"node:__internal_head__": 0.01}
    runs = actorhub.get([where.options(resources=head).remote() for _ in range(4)], timeout=60)
    assert {r["node"] for r in runs} == {shared_cluster.node_id}
    total = actorhub.cluster_resources()
    assert total["node:__internal_head__"] == 1.0
    ips = [name for name in total if name.startswith("node:") and name != "node:__internal_head__"]
    assert ips and all(total[name] >= 1.0 for name in ips)
    [listed] = [n for n in actorhub.nodes() if n["NodeID"] == shared_cluster.node_id]
    assert listed["Resources"]["node:__internal_head__"] == 1.0
    # Actors ask the same way.
    on_head = GpuActor.options(resources=head).remote()
    assert actorhub.get(on_head.node.remote(), timeout=60) == shared_cluster.node_id
    actorhub.kill(on_head)


def test_an_infeasible_task_waits_and_runs_once_a_node_that_fits_joins(
    shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorhub")
    big_gpu = where.options(num_gpus=4).remote()
    big_cpu = where.options(num_cpus=16).remote()
    ready, _ = actorhub.wait([big_gpu, big_cpu], num_returns=2, timeout=1.0)
    assert not ready  # pending, not failed
    warned = [r.getMessage() for r in caplog.records if "cannot be scheduled right now" in r.getMessage()]
    assert any("{CPU: 1, GPU: 4}" in m for m in warned) and any("{CPU: 16}" in m for m in warned)
    config = Config.load(num_cpus=16, num_gpus=4)
    process = start_node(config, Session(Path(shared_cluster.session_dir)), shared_cluster.address)
    try:
        big = actorhub.get([big_gpu, big_cpu], timeout=60)
        assert big[0]["node"] == big[1]["node"] not in (shared_cluster.node_id, gpu_node.node_id)
        assert len(big[0]["gpus"]) == 4
    finally:
        end(process)


def test_a_gpu_task_whose_worker_died_runs_again_with_a_gpu_and_gives_it_back(
        shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus, tmp_path: Path) -> None:
    ids = actorhub.get(crash_once.options(num_gpus=1).remote(str(tmp_path / "crashed")), timeout=60)
    assert (tmp_path / "crashed").exists() and len(ids) == 1
    wait_for(lambda: actorhub.available_resources().get("GPU") == 2.0, "the crashed task's GPU to come back")


def test_a_task_whose_only_fitting_node_died_waits_for_another_that_fits(
        shared_cluster: actorhub.ClusterContext, gpu_node: NodeStatus, tmp_path: Path) -> None:
    session = Session(Path(shared_cluster.session_dir))
    first = start_node(Config.load(num_cpus=1, resources={"fragile": 1}), session, shared_cluster.address)
    try:
        wait_for(lambda: actorhub.cluster_resources().get("fragile") == 1.0, "the fragile node to join")
        marker = tmp_path / "hold"
        marker.touch()
        task = hold_while.options(resources={"fragile": 1}).remote(str(marker))
        wait_for(Path(f"{marker}.started").exists, "the task to start on the fragile node")
        end(first)  # the node stops, its workers with it
        ready, _ = actorhub.wait([task], timeout=2.0)
        assert not ready  # no node has "fragile" now: it waits, not fails
        marker.unlink()
        second = start_node(Config.load(num_cpus=1, resources={"fragile": 1}), session, shared_cluster.address)
        try:
            # Its second run, on the node that joined.
            assert actorhub.get(task, timeout=60) not in (gpu_node.node_id, shared_cluster.node_id)
        finally:
            end(second)
    finally:
        end(first)
