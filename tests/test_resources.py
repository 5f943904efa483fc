"""Resources besides CPUs: nodes declare GPUs, memory and custom resources; actors ask for them
and are placed where they fit, hold them while they live, and see their GPUs as
CUDA_VISIBLE_DEVICES and get_gpu_ids(); what does not fit waits, saying why."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import end
from _wait import wait_for

import actorhub
from actorhub._proto.v1 import common_pb2, node_pb2
from actorhub.api.options import ActorOptions
from actorhub.cli.inspect import status_command
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config, ConfigError
from actorhub.exceptions import OptionsError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.control_store import SQLiteControlStore
from actorhub.hub.records import HostedActor, Placement
from actorhub.hub.resources import GpuSlots
from actorhub.runtime.runtime import current
from actorhub.tasks.options import TaskOptions
from actorhub.wire.records import ActorInfo, NodeStatus

MIB = 1024 * 1024


@actorhub.remote
class Probe:
    def where(self) -> dict[str, Any]:
        context = actorhub.get_runtime_context()
        return {
            "node": context.get_node_id(),
            "gpus": actorhub.get_gpu_ids(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "accelerators": context.get_accelerator_ids()["GPU"],
            "assigned": context.get_assigned_resources(),
        }


def info_of(actor: Any) -> ActorInfo:
    return current().hub.actor_info(actor.actor_id)


@pytest.fixture
def gpu_node(cluster: actorhub.ClusterContext) -> Iterator[NodeStatus]:
    """A second node with 2 (fake) GPUs and one "special" resource; the head has neither."""
    config = Config.load(num_cpus=1, num_gpus=2, resources={"special": 1}, memory=512 * MIB)
    process = start_node(config, Session(Path(cluster.session_dir)), cluster.address)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 2, "the GPU node to join")
        yield next(n for n in current().hub.cluster_status().nodes if n.node_id != cluster.node_id)
    finally:
        end(process)


# -- the rules, without a cluster --------------------------------------------------------------


def test_fractional_gpus_pack_onto_one_gpu_and_whole_ones_take_free_gpus() -> None:
    slots = GpuSlots(2)
    assert slots.assign(0.5) == [0] and slots.assign(0.25) == [0]  # packed onto the one in use
    assert slots.assign(1) == [1]
    assert slots.assign(1) is None and not slots.can_assign(0.5) and slots.can_assign(0.25)
    slots.release([1], 1)
    assert slots.assign(2) is None and slots.assign(1) == [1]


@pytest.mark.parametrize(("options", "message"), [
    ({"num_gpus": 1.5}, "num_gpus above 1 must be a whole number"),
    ({"num_gpus": -1}, "num_gpus must be a finite number >= 0"),
    ({"num_gpus": math.nan}, "num_gpus must be a finite number >= 0"),
    ({"num_gpus": "1"}, "Input should be a valid number, not str"),
    ({"memory": math.inf}, "memory must be a finite number >= 0"),
    ({"resources": {"CPU": 1}}, "'CPU' has its own option"),
    ({"resources": {"GPU": 1}}, "'GPU' has its own option"),
    ({"resources": {"memory": 1}}, "'memory' has its own option"),
    ({"resources": {"x": 2.5}}, "resources['x'] above 1 must be a whole number"),
    ({"resources": {"": 1}}, "a resource name must be a non-empty string"),
    ({"resources": {"x": True}}, "Input should be a valid number"),
])
def test_bad_resource_requests_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=next(iter(options))) as raised:
        ActorOptions.parse("Probe", **options)
    assert message in str(raised.value)


def test_resource_vectors_of_good_requests() -> None:
    options = ActorOptions.parse("Probe", num_gpus=0.5, memory=MIB, resources={"special": 1, "unused": 0})
    assert options.resource_vector == {"GPU": 0.5, "memory": float(MIB), "special": 1.0}
    assert ActorOptions.parse("Probe", num_gpus=2).resource_vector == {"GPU": 2.0}
    # Tasks take the same (tests/test_task_resources.py); nothing asked is the CPU-only shape.
    assert TaskOptions.parse("f", num_gpus=1, resources={"special": 1}).shape == (("GPU", 1.0), ("special", 1.0))
    assert TaskOptions.parse("f", num_gpus=0, resources={}).shape == ()


def test_a_node_declares_its_resources_as_json() -> None:
    assert Config.load(resources='{"x86": 1, "big": 4}').resources == {"x86": 1.0, "big": 4.0}
    with pytest.raises(ConfigError, match="JSON object"):
        Config.load(resources="{x86: 1}")
    with pytest.raises(ConfigError, match="'GPU' has its own option"):
        Config.load(resources='{"GPU": 1}')


# -- on a cluster ---------------------------------------------------------------------------------


def test_gpu_actors_land_on_the_gpu_node_see_their_gpus_and_hold_them(
    cluster: actorhub.ClusterContext, gpu_node: NodeStatus
) -> None:
    total = actorhub.cluster_resources()
    assert (total["CPU"], total["GPU"], total["special"]) == (3.0, 2.0, 1.0)
    assert total["memory"] >= 512 * MIB and total["object_store_memory"] > 0
    [gpu_listed] = [n for n in actorhub.nodes() if n["NodeID"] == gpu_node.node_id]
    assert gpu_listed["Resources"]["GPU"] == 2.0 and gpu_listed["Resources"]["memory"] == 512 * MIB

    first, second = (Probe.options(num_gpus=1).remote() for _ in range(2))
    seen = [actorhub.get(a.where.remote(), timeout=60) for a in (first, second)]
    assert {s["node"] for s in seen} == {gpu_node.node_id}
    assert sorted(s["gpus"][0] for s in seen) == [0, 1] and all(len(s["gpus"]) == 1 for s in seen)
    for s in seen:
        assert s["cuda"] == str(s["gpus"][0]) and s["accelerators"] == [str(s["gpus"][0])]
        assert s["assigned"] == {"GPU": 1.0}
    assert actorhub.available_resources().get("GPU", 0.0) == 0.0

    # A third whole GPU does not fit until one of the first two is gone.
    third = Probe.options(num_gpus=1).remote()
    wait_for(lambda: info_of(third).pending_reason != "", "the third GPU actor to say why it waits")
    info = info_of(third)
    assert info.state == "PENDING" and not info.infeasible
    assert "waiting for resources: requires {GPU: 1}" in info.pending_reason
    freed = seen[0]["gpus"][0]
    actorhub.kill(first)
    assert actorhub.get(third.where.remote(), timeout=60)["gpus"] == [freed]

    # Fractions share one GPU: the one freed next.
    actorhub.kill(second)
    wait_for(lambda: actorhub.available_resources().get("GPU", 0.0) == 1.0, "the killed actor's GPU to be freed")
    halves = [Probe.options(num_gpus=0.5).remote() for _ in range(2)]
    shared = [actorhub.get(h.where.remote(), timeout=60) for h in halves]
    assert shared[0]["gpus"] == shared[1]["gpus"] and len(shared[0]["gpus"]) == 1
    assert shared[0]["cuda"] == str(shared[0]["gpus"][0]) and shared[0]["assigned"] == {"GPU": 0.5}
    assert actorhub.available_resources().get("GPU", 0.0) == 0.0


def test_custom_and_memory_requests_are_placed_and_infeasible_ones_say_why(
    cluster: actorhub.ClusterContext, gpu_node: NodeStatus, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.WARNING, logger="actorhub")
    special = Probe.options(resources={"special": 1}, memory=64 * MIB).remote()
    seen = actorhub.get(special.where.remote(), timeout=60)
    assert seen["node"] == gpu_node.node_id and seen["gpus"] == [] and seen["cuda"] is None
    assert seen["assigned"] == {"special": 1.0, "memory": 64.0 * MIB}
    [gpu_status] = [n for n in current().hub.cluster_status().nodes if n.node_id == gpu_node.node_id]
    assert dict(gpu_status.available_resources)["memory"] == 448 * MIB
    assert dict(gpu_status.available_resources)["special"] == 0.0
    # A plain actor runs anywhere, and one asking for memory only fits where there is that much.
    plain = Probe.remote()
    assert actorhub.get(plain.where.remote(), timeout=60)["assigned"] == {}

    too_many = Probe.options(num_gpus=4).remote()
    unknown = Probe.options(resources={"tpu_pod": 1}).remote()
    for actor, demand in ((too_many, "{GPU: 4}"), (unknown, "{tpu_pod: 1}")):
        wait_for(lambda a=actor: info_of(a).infeasible, f"{demand} to be found infeasible")
        reason = info_of(actor).pending_reason
        assert reason.startswith(f"infeasible: requires {demand} but no alive node has"), reason
    _ = too_many.where.remote()  # a call waits for the actor: the driver is told why, as Ray warns
    wait_for(lambda: any("cannot be scheduled" in r.getMessage() and "{GPU: 4}" in r.getMessage()
                         for r in caplog.records), "the driver to be warned about the GPU demand")
    assert status_command(cluster.address) == 0
    status = capsys.readouterr().out
    assert "GPU 2/2" in status and "special 0/1" in status
    assert "infeasible: requires {tpu_pod: 1}" in status


def test_an_actor_that_asks_for_nothing_needs_a_node_with_a_cpu_and_holds_none(session_root: Path) -> None:
    context = actorhub.init(num_cpus=0)  # a head that takes no work, as Ray's num_cpus=0 heads
    process = None
    try:
        default = Probe.remote()
        wait_for(lambda: info_of(default).infeasible, "a default actor to be found infeasible on a node without CPUs")
        assert info_of(default).pending_reason.startswith("infeasible: requires {CPU: 1} but no node has that many")
        # Asking for 0 CPUs explicitly is an explicit request: it holds for placement too.
        explicit = Probe.options(num_cpus=0).remote()
        assert actorhub.get(explicit.where.remote(), timeout=60)["node"] == context.node_id
        process = start_node(Config.load(num_cpus=1), Session(Path(context.session_dir)), context.address)
        first = actorhub.get(default.where.remote(), timeout=60)
        assert first["node"] != context.node_id and first["assigned"] == {}
        # Placed with 1 CPU, holding none: more of them fit on the 1-CPU node.
        more = [Probe.remote() for _ in range(3)]
        assert {actorhub.get(a.where.remote(), timeout=60)["node"] for a in more} == {first["node"]}
    finally:
        actorhub.shutdown()
        if process is not None:
            end(process)


# -- the hub's table, in-process ------------------------------------------------------------------


def _gpu_spec(actor_id: str, gpus: float) -> common_pb2.ActorSpec:
    return common_pb2.ActorSpec(actor_id=actor_id, class_name="Probe", namespace="ns", owner_job_id="00000001",
                                resources={"GPU": gpus})


def _alive(table: ActorTable, placement: Placement) -> None:
    reply = node_pb2.NodeStartActorReply(ok=True, address=f"w-{placement.actor_id}", worker_id="wk", pid=1)
    table.start_finished(placement, reply)


def test_the_table_hands_out_gpu_ids_and_a_restarted_hub_keeps_the_ones_nodes_report(tmp_path: Path) -> None:
    table = ActorTable(placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    table.register_node("n1", "node1:1", 1.0, 11, resources={"GPU": 2.0})
    placed = {}
    for actor_id in ("a", "b", "c"):
        _, _, out = table.create_actor(_gpu_spec(actor_id, 1), False)
        for p in out.placements:
            placed[p.actor_id] = p
            _alive(table, p)
    assert (placed["a"].gpu_ids, placed["b"].gpu_ids) == ((0,), (1,)) and "c" not in placed
    assert "waiting for resources: requires {GPU: 1}" in table.get_actor("c").pending_reason
    [moved] = table.worker_exited("a", 0, "crash").placements
    assert (moved.actor_id, moved.gpu_ids) == ("c", (0,))
    _alive(table, moved)

    store = SQLiteControlStore.in_session(tmp_path)
    store.save(table.take_dirty())
    fresh = ActorTable(placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    fresh.restore(store.load())
    store.close()
    # The node reports its workers' GPUs: b keeps GPU 1 and c GPU 0, so nothing is free.
    hosted = [HostedActor("b", 0, "w-b", "wk", 1, gpu_ids=(1,)), HostedActor("c", 0, "w-c", "wk", 1, gpu_ids=(0,))]
    fresh.register_node("n1", "node1:1", 1.0, 11, hosted, {"GPU": 2.0})
    _, _, out = fresh.create_actor(_gpu_spec("d", 0.5), False)
    assert out.placements == []
    [released] = fresh.worker_exited("b", 0, "crash").placements
    assert (released.actor_id, released.gpu_ids) == ("d", (1,))


def _cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "actorhub.cli", *args], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"actorhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_actorhub_start_declares_gpus_memory_and_custom_resources(session_root: Path) -> None:
    _cli("start", "--head", "--num-cpus", "1", "--num-gpus", "3", "--memory", str(2**30),
         "--resources", '{"x86": 1, "tokens": 8}')
    try:
        status = _cli("status")
        assert "GPU 3/3" in status and "memory 1.0/1.0 GiB" in status and "tokens 8/8" in status and "x86 1/1" in status
        context = actorhub.init(address="auto")
        try:
            total = actorhub.cluster_resources()
            assert (total["GPU"], total["memory"], total["x86"], total["tokens"]) == (3.0, 2.0**30, 1.0, 8.0)
            gpus = actorhub.get(Probe.options(num_gpus=2).remote().where.remote(), timeout=60)
            assert gpus["gpus"] == [0, 1] and gpus["cuda"] == "0,1" and gpus["node"] == context.node_id
        finally:
            actorhub.shutdown()
    finally:
        _cli("stop")
