"""Node agents and the hub killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from _procs import gone
from _wait import wait_for

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ActorDiedError, ActorUnavailableError
from actorhub.runtime.runtime import current
from actorhub.wire.records import ClusterStatus


@actorhub.remote
class Where:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


def _status() -> ClusterStatus:
    return current().hub.cluster_status()


def test_sigkilled_node_agent_takes_its_workers_and_actors_restart_on_another_node(
    cluster: actorhub.ClusterContext,
) -> None:
    second = start_node(Config.load(num_cpus=1), Session(Path(cluster.session_dir)), cluster.address)
    try:
        wait_for(lambda: len([n for n in _status().nodes if n.alive]) == 2, "the second node to join", 15)
        # SPREAD: Ray's DEFAULT would keep these CPU-less actors on the driver's node.
        actors = [Where.options(max_restarts=1, scheduling_strategy="SPREAD").remote() for _ in range(4)]
        nodes = actorhub.get([a.node.remote() for a in actors])
        assert len(set(nodes)) == 2, "actors were not spread over both nodes"
        victim = next(a for a, n in zip(actors, nodes, strict=True) if n != cluster.node_id)
        victim_pid = actorhub.get(victim.pid.remote())
        node_pid = next(n.pid for n in _status().nodes if n.node_id != cluster.node_id)
        assert node_pid == second.pid
        os.kill(node_pid, signal.SIGKILL)
        second.wait(10)
        wait_for(lambda: gone(victim_pid), "its worker to die with it", 15)
        wait_for(lambda: not next(n for n in _status().nodes if n.pid == node_pid).alive, "the hub to see it dead", 15)
        # the actor restarts on the node that is left
        deadline = time.monotonic() + 30
        while True:
            try:
                assert actorhub.get(victim.node.remote(), timeout=30) == cluster.node_id
                break
            except ActorDiedError:
                assert time.monotonic() < deadline
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()


def test_a_hub_gone_for_good_ends_the_nodes_after_the_reconnect_timeout_and_leaves_nothing(
    session_root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A killed hub is restarted by its supervisor; killing the supervisor (its hub dies with it)
    # is the control plane gone for good. Node agents ride it out for hub_reconnect_timeout_s,
    # then stop and take their workers with them.
    monkeypatch.setenv("ACTORHUB_HUB_RECONNECT_TIMEOUT_S", "3")
    monkeypatch.setenv("ACTORHUB_DEADLINES_CONTROL_S", "2")
    cluster = actorhub.init(num_cpus=2)
    try:
        a = Where.remote()
        assert actorhub.get(a.node.remote()) == cluster.node_id
        worker_pid = actorhub.get(a.pid.remote())
        session = Path(cluster.session_dir)
        supervisor_pid = int((session / "hub-supervisor.pid").read_text())
        hub_pid = int((session / "hub.pid").read_text())
        os.kill(supervisor_pid, signal.SIGKILL)
        wait_for(lambda: gone(hub_pid), "the hub to die with its supervisor", 15)
        # The actor still answers while its node waits for the hub.
        assert actorhub.get(a.node.remote(), timeout=10) == cluster.node_id
        wait_for(lambda: gone(worker_pid), "the node's worker to end", 30)
        start = time.monotonic()
        with pytest.raises((ActorUnavailableError, ActorDiedError)):
            actorhub.get(a.node.remote(), timeout=60)
        assert time.monotonic() - start < 30
    finally:
        # shutdown() still returns, and the leak check sees nothing left
        actorhub.shutdown()
