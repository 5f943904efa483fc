"""Ray's scheduling strategies on a 3-node cluster (the driver's node and two node agents, 2 CPUs
each), for tasks and for actors: DEFAULT, SPREAD, NodeAffinitySchedulingStrategy soft and hard."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import end
from _wait import wait_for
from conftest import _allowed_roots, nodes_b_and_c

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ActorUnschedulableError, OptionsError, TaskUnschedulableError
from actorhub.object_store import shm
from actorhub.runtime.runtime import current
from actorhub.tasks.submit_state import NODES_EVERY_S
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

MIB = 1 << 20


@actorhub.remote
def where(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote
def where_is(array: Any) -> str:
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote
def array() -> Any:
    return np.ones(MIB // 8)  # 1 MiB: stored in the store of the node that made it


@actorhub.remote
class Where:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()


def _alive() -> dict[str, str]:
    return {n.node_id: n.address for n in current().hub.cluster_status().nodes if n.alive}


def _node(handle: Any) -> str:
    return str(actorhub.get(handle.node.remote(), timeout=60))


@pytest.fixture(scope="module")
def nodes(shared_cluster: actorhub.ClusterContext) -> Iterator[tuple[str, str, str]]:
    """(the driver's node, node b, node c), 2 CPUs each."""
    with nodes_b_and_c(shared_cluster) as ids:
        yield ids


def test_default_actors_stay_on_the_callers_node_until_it_is_half_used(nodes: tuple[str, str, str]) -> None:
    head, b, c = nodes
    first, second = Where.options(num_cpus=1).remote(), Where.options(num_cpus=1).remote()
    assert _node(first) == head
    assert _node(second) in (b, c)  # the caller's node is half used: the least loaded instead
    actorhub.kill(first)
    actorhub.kill(second)
    # Ray's default actor holds no CPU once placed, so its node never gets busier.
    plain = [Where.remote() for _ in range(4)]
    assert {_node(a) for a in plain} == {head}
    for a in plain:
        actorhub.kill(a)


def test_default_tasks_stay_on_the_callers_node_until_it_is_busy(nodes: tuple[str, str, str]) -> None:
    head, b, c = nodes
    long = where.remote(2.0)
    time.sleep(0.3)
    assert actorhub.get(where.remote(0), timeout=60) in (b, c)  # one of head's 2 CPUs is taken
    assert actorhub.get(long, timeout=60) == head
    assert {actorhub.get(where.remote(0), timeout=60) for _ in range(3)} == {head}  # one at a time: here
    many = Counter(actorhub.get([where.remote(1.0) for _ in range(6)], timeout=60))
    assert set(many) == {head, b, c} and many[head] >= 2, many


def test_default_tasks_follow_their_big_argument(nodes: tuple[str, str, str]) -> None:
    head, _, c = nodes
    made_on_c = array.options(scheduling_strategy=On(c)).remote()
    actorhub.wait([made_on_c], timeout=60)
    assert current().objects.store_id_of(made_on_c.hex()).endswith("@" + _alive()[c])
    assert actorhub.get(where_is.remote(made_on_c), timeout=60) == c
    put_here = actorhub.put(np.ones(MIB // 8))
    assert actorhub.get(where_is.remote(put_here), timeout=60) == head


def test_spread_goes_over_all_three_nodes(nodes: tuple[str, str, str]) -> None:
    spread = where.options(scheduling_strategy="SPREAD")
    assert set(actorhub.get([spread.remote(0.5) for _ in range(6)], timeout=60)) == set(nodes)
    actors = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    assert {_node(a) for a in actors} == set(nodes)
    for a in actors:
        actorhub.kill(a)


def test_soft_affinity_to_a_full_node(nodes: tuple[str, str, str]) -> None:
    _, b, _ = nodes
    filler = Where.options(num_cpus=2, scheduling_strategy=On(b)).remote()
    assert _node(filler) == b
    spill = Where.options(num_cpus=1, scheduling_strategy=On(b, soft=True, _spill_on_unavailable=True)).remote()
    assert _node(spill) != b
    # Ray's soft affinity waits for a live node that could fit it; a hard one may fail instead.
    waiting = Where.options(num_cpus=1, scheduling_strategy=On(b, soft=True)).remote()
    assert actorhub.wait([waiting.node.remote()], timeout=1.0)[0] == []
    hasty = Where.options(num_cpus=1, scheduling_strategy=On(b, _fail_on_unavailable=True)).remote()
    with pytest.raises(ActorUnschedulableError, match="has no room for it now"):
        _node(hasty)
    actorhub.kill(filler)
    assert _node(waiting) == b
    for a in (spill, waiting):
        actorhub.kill(a)
    # Tasks: b's two CPUs taken by pinned tasks, a soft one that may spill runs elsewhere.
    busy = [where.options(scheduling_strategy=On(b)).remote(2.0) for _ in range(2)]
    time.sleep(0.3)
    spilled = where.options(scheduling_strategy=On(b, soft=True, _spill_on_unavailable=True)).remote(0)
    assert actorhub.get(spilled, timeout=60) != b
    assert set(actorhub.get(busy, timeout=60)) == {b}


def test_affinity_to_a_dead_node_soft_runs_elsewhere_hard_fails(shared_cluster: actorhub.ClusterContext,
                                                                nodes: tuple[str, str, str]) -> None:
    dead = "d00000000000003"
    agent = start_node(Config.load(num_cpus=2), Session(Path(shared_cluster.session_dir)), shared_cluster.address,
                       dead)
    _allowed_roots.add(agent.pid)
    try:
        wait_for(lambda: dead in _alive(), f"node {dead} to join")
        os.kill(agent.pid, signal.SIGKILL)
        end(agent)
        wait_for(lambda: dead not in _alive(), f"the hub to see node {dead} dead")
    finally:
        _allowed_roots.discard(agent.pid)
        # Killed, it could not remove its arena; the session's end would, but that is the module's.
        arena = shm.segment_root() / f"actorhub-{shm.segments_name(Path(shared_cluster.session_dir), dead)}"
        shutil.rmtree(arena, ignore_errors=True)
    # The submitter may still see the node alive (its view is up to 2 s old): then the node's desk
    # cannot be placed, and the soft task runs elsewhere all the same, the hard one fails.
    assert actorhub.get(where.options(scheduling_strategy=On(dead, soft=True)).remote(), timeout=60) in nodes
    with pytest.raises(TaskUnschedulableError, match=f"names node {dead}, which is not (an )?alive"):
        actorhub.get(where.options(scheduling_strategy=On(dead)).remote(), timeout=60)
    time.sleep(NODES_EVERY_S + 0.5)  # now it knows
    assert actorhub.get(where.options(scheduling_strategy=On(dead, soft=True)).remote(), timeout=60) in nodes
    with pytest.raises(TaskUnschedulableError, match=f"names node {dead}, which is not an alive node"):
        actorhub.get(where.options(scheduling_strategy=On(dead)).remote(), timeout=60)
    soft = Where.options(scheduling_strategy=On(dead, soft=True)).remote()
    assert _node(soft) in nodes
    hard = Where.options(scheduling_strategy=On(dead, soft=False)).remote()
    with pytest.raises(ActorUnschedulableError, match=f"names node {dead}, which is not alive"):
        _node(hard)
    actorhub.kill(soft)


@pytest.mark.parametrize("strategy", ["spread", "PACK", 3, {"node_id": "x"}])
def test_bad_strategies_are_options_errors(shared_cluster: actorhub.ClusterContext, strategy: Any) -> None:
    with pytest.raises(OptionsError, match="scheduling_strategy="):
        where.options(scheduling_strategy=strategy)
    with pytest.raises(OptionsError, match="scheduling_strategy="):
        Where.options(scheduling_strategy=strategy)
