"""Task resources without processes: lease shapes in the submitter's state (pools, how many
leases, feasible nodes, infeasible tasks waiting for a node) and the hub's side of what desks
lend besides CPUs (claims granted with GPU ids, absolute reports, pending actors first)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from _fake_clock import FakeClock

from actorhub._proto.v1 import common_pb2
from actorhub.hub.records import ActorRecord, NodeRecord
from actorhub.hub.resources import GpuSlots
from actorhub.hub.task_loans import LoanAnswer, grant_claim, replace_loans
from actorhub.tasks.lease_desk import LeaseDesk
from actorhub.tasks.lease_shapes import copies_fit, demand_text, shape_of
from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import Lease, SubmitState, Task
from actorhub.wire.hub import CpuShare

_seqs = itertools.count(1)
GPU_NODES = {"n2": {"GPU": 2.0, "special": 2.0}}


def task(**options: Any) -> Task:
    seq = next(_seqs)
    return Task(seq, f"t{seq}", ("fn", b""), b"", TaskOptions(**options), [f"c.t{seq}.0"])


@pytest.fixture
def state() -> SubmitState:
    s = SubmitState("n1", FakeClock().now)
    s.nodes_seen({"n1": 2.0, "n2": 4.0}, GPU_NODES)
    return s


# ---- shapes ------------------------------------------------------------------------------------


def test_a_shape_is_the_vector_besides_cpus_and_cpu_only_tasks_have_none() -> None:
    assert task().pool[3] == () and task(num_gpus=0, resources={}).pool[3] == ()
    assert task(num_gpus=0.5, memory=10, resources={"b": 1, "a": 2}).pool[3] == (
        ("GPU", 0.5), ("a", 2.0), ("b", 1.0), ("memory", 10.0))
    assert task(num_gpus=1).pool != task().pool  # their own pools: a lease serves one shape
    assert shape_of({"x": 0.0, "GPU": 1}) == (("GPU", 1.0),)
    assert demand_text(1.0, (("GPU", 4.0),)) == "{CPU: 1, GPU: 4}"


def test_copies_that_fit_a_node_are_bounded_by_each_resource() -> None:
    assert copies_fit(1.0, (("GPU", 1.0),), 4.0, {"GPU": 2.0}) == 2
    assert copies_fit(1.0, (("GPU", 0.5),), 4.0, {"GPU": 2.0}) == 4
    assert copies_fit(0.0, (("GPU", 0.5),), 0.0, {"GPU": 2.0}) == 4  # no CPUs asked: GPUs decide
    assert copies_fit(1.0, (("GPU", 1.0),), 4.0, {}) == 0


def test_max_leases_counts_how_many_of_the_vector_the_nodes_fit(state: SubmitState) -> None:
    assert state.max_leases(task(num_gpus=1).pool) == 2
    assert state.max_leases(task(num_gpus=0.5, num_cpus=0).pool) == 4
    assert state.max_leases(task(resources={"special": 1}).pool) == 2
    assert state.max_leases(task(num_gpus=4).pool) == 0  # no node has 4 GPUs
    assert state.max_leases(task(num_cpus=8).pool) == 0  # nor 8 CPUs


def test_a_task_with_a_shape_asks_only_a_node_that_has_it(state: SubmitState) -> None:
    gpu, special = task(num_gpus=1), task(resources={"special": 1})
    assert state.task_ready(gpu) is True and state.task_ready(special) is True
    assert state.lease_requested(gpu.pool) == "n2"  # the caller's node n1 has no GPU
    assert state.lease_requested(special.pool) == "n2"
    # An idle GPU lease of n2 is taken even though the caller's node has CPUs free.
    lease = Lease(object(), gpu.pool, "n2", (0,))
    state.lease_granted(lease)
    state.task_left(lease)
    again = task(num_gpus=1)
    assert state.task_ready(again) is lease and lease.gpu_ids == (0,)


def test_an_infeasible_task_waits_warns_once_and_is_asked_for_once_a_node_fits_it(state: SubmitState) -> None:
    big = [task(num_gpus=4) for _ in range(3)]
    assert [state.task_ready(t) for t in big] == [False, False, False]
    assert state.requested[big[0].pool] == 0 and len(state.ready) == 3  # waiting, not failed
    assert state.warn_infeasible(big[0].pool) is True and state.warn_infeasible(big[0].pool) is False
    assert state.nodes_seen({"n1": 2.0, "n2": 4.0}, GPU_NODES) == []  # still nothing fits
    # A node with 4 GPUs joins: as many leases as fit it (1 CPU each, 8 CPUs, 4 GPUs: one).
    revived = state.nodes_seen({"n1": 2.0, "n2": 4.0, "n3": 8.0}, {**GPU_NODES, "n3": {"GPU": 4.0}})
    assert revived == [big[0].pool] and state.requested[big[0].pool] == 1
    assert state.lease_requested(big[0].pool) == "n3"


def test_a_cpu_infeasible_task_waits_as_well(state: SubmitState) -> None:
    big = task(num_cpus=16)
    assert state.task_ready(big) is False and state.warn_infeasible(big.pool) is True
    assert state.nodes_seen({"n1": 2.0, "n9": 16.0}) == [big.pool]


def test_a_shape_refused_by_its_only_node_waits_for_the_next_view_instead_of_asking_again(
        state: SubmitState) -> None:
    gpu = task(num_gpus=1)
    assert state.task_ready(gpu) is True
    node = state.lease_requested(gpu.pool)
    again, doomed = state.lease_refused(gpu.pool, node)
    assert (again, doomed) == (False, []) and list(state.ready) == [gpu]
    assert gpu.pool in state.infeasible


def test_a_pinned_shape_waits_at_its_desk_even_if_the_node_lacks_it_now(state: SubmitState) -> None:
    from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    bundle = task(resources={"bundle_group_x": 0.001}, scheduling_strategy=NodeAffinitySchedulingStrategy("n1"))
    assert state.max_leases(bundle.pool) == 1  # a placement group may add it there: the desk waits


# ---- the hub's side ----------------------------------------------------------------------------


def gpu_node() -> NodeRecord:
    totals = {"GPU": 2.0, "special": 2.0}
    return NodeRecord("n2", "addr", 4.0, 4.0, 1, 1, 1, resources=dict(totals), available=dict(totals),
                      gpus=GpuSlots(2))


def test_the_hub_grants_claims_with_gpu_ids_and_reports_replace_what_was_lent() -> None:
    node = gpu_node()
    first = grant_claim(node, {"GPU": 1.0}, [])
    second = grant_claim(node, {"GPU": 1.0, "special": 1.0}, [])
    assert first.granted and second.granted and sorted(first.gpu_ids + second.gpu_ids) == [0, 1]
    assert not grant_claim(node, {"GPU": 0.5}, []).granted  # both GPUs lent: none for an actor either
    assert not node.gpus.can_assign(0.5) and node.available == {"GPU": 0.0, "special": 1.0}
    # The desk says it lends only the first now: the second's GPU and "special" come back.
    fell = replace_loans(node, {"GPU": 1.0}, {first.gpu_ids[0]: 1.0})
    assert fell and node.available == {"GPU": 1.0, "special": 2.0} and node.gpus.can_assign(1.0)
    # The same report again (a repeated RPC) changes nothing.
    assert not replace_loans(node, {"GPU": 1.0}, {first.gpu_ids[0]: 1.0})
    assert node.available == {"GPU": 1.0, "special": 2.0}
    halves = [grant_claim(node, {"GPU": 0.5}, []) for _ in range(2)]
    assert halves[0].gpu_ids == halves[1].gpu_ids == second.gpu_ids  # fractions pack onto one GPU
    assert node.lent_gpus == {first.gpu_ids[0]: 1.0, second.gpu_ids[0]: 1.0}
    replace_loans(node, {}, {})  # a restarted desk lends nothing
    assert node.available == {"GPU": 2.0, "special": 2.0} and node.gpus.can_assign(2.0)


def test_a_claim_is_refused_while_a_pending_actor_waits_for_what_tasks_hold() -> None:
    node = gpu_node()
    assert grant_claim(node, {"GPU": 2.0}, []).granted
    waiting = ActorRecord(spec=common_pb2.ActorSpec(actor_id="a", resources={"GPU": 1.0}))
    # Once the tasks give a GPU back, the actor would fit: no new task takes it meanwhile.
    replace_loans(node, {"GPU": 1.0}, {0: 1.0})
    assert not grant_claim(node, {"GPU": 1.0}, [waiting]).granted
    assert grant_claim(node, {"special": 1.0}, [waiting]).granted  # what it does not want is lent
    assert grant_claim(node, {"GPU": 1.0}, []).granted


def test_a_resource_the_node_lost_while_lent_does_not_come_back() -> None:
    node = gpu_node()
    node.resources["bundle_group_x"] = node.available["bundle_group_x"] = 1.0  # a placement group's
    assert grant_claim(node, {"bundle_group_x": 0.5}, []).granted
    del node.resources["bundle_group_x"], node.available["bundle_group_x"]  # the group is removed
    replace_loans(node, {}, {})
    assert "bundle_group_x" not in node.available
    assert not grant_claim(node, {"bundle_group_x": 0.5}, []).granted


# ---- a desk against the hub's rules -----------------------------------------------------------


class FakeExecutor:
    def __init__(self, number: int) -> None:
        self.actor_id = f"e{number}"


class DeskOnTheHubsRules(LeaseDesk):
    """A desk whose hub is `task_loans` on one NodeRecord, with no processes."""

    def __init__(self, node: NodeRecord) -> None:
        self.hub_node = node
        self.made = itertools.count()
        super().__init__(node.node_id, node.num_cpus)

    def _create_executor(self, runtime_env: str = "") -> Any:
        return FakeExecutor(next(self.made))

    def _report(self, lent: float, lent_vector: dict[str, float] | None = None,
                lent_gpus: dict[int, float] | None = None,
                lent_bundle_gpus: dict[tuple[str, int, int], float] | None = None,
                claim: dict[str, float] | None = None) -> CpuShare:
        node = self.hub_node
        replace_loans(node, lent_vector or {}, lent_gpus or {})
        answer = grant_claim(node, claim, []) if claim else LoanAnswer()
        return CpuShare(0.0, 0.0, answer.granted, answer.gpu_ids, tuple(node.resources.items()))

    async def _watch_holders(self) -> None:
        while True:  # the desk's tick, faster
            await asyncio.sleep(0.01)
            self._wake_claims()


def test_a_desk_lends_what_the_hub_grants_waits_when_refused_and_gives_it_all_back() -> None:
    async def scenario() -> None:
        node = gpu_node()
        desk = DeskOnTheHubsRules(node)
        first, first_ids = await desk.lease(1.0, "holder", "", {"GPU": 1.0})
        second, second_ids = await desk.lease(1.0, "holder", "", {"GPU": 1.0, "special": 1.0})
        assert sorted(first_ids + second_ids) == [0, 1] and node.available == {"GPU": 0.0, "special": 1.0}
        third = asyncio.ensure_future(desk.lease(1.0, "holder", "", {"GPU": 1.0}))
        await asyncio.sleep(0.1)
        assert not third.done() and (await desk.stats())["waiting_for_resources"] == 1
        await desk.release(first.actor_id)
        executor, third_ids = await asyncio.wait_for(third, 5.0)
        assert third_ids == first_ids  # the GPU the first lease gave back
        plain = await desk.lease(1.0, "holder")  # CPU-only: a bare executor, nothing claimed
        assert isinstance(plain, FakeExecutor)
        for lent in (second, executor, plain):
            await desk.release(lent.actor_id)
        for _ in range(100):  # the desk's last report reaches the hub
            if node.available == {"GPU": 2.0, "special": 2.0}:
                break
            await asyncio.sleep(0.02)
        assert node.available == {"GPU": 2.0, "special": 2.0} and node.lent_gpus == {}
        assert (await desk.stats())["node:GPU"] == 2.0  # the node's totals, as the hub said

    asyncio.run(scenario())
