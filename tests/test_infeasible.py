"""An actor that cannot be placed says why: in the hub's records (WaitActor, ListActors,
GetClusterStatus), in `actorhub status` and `actorhub list actors`; and it is placed as
before once a node that fits it joins or CPUs are freed."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _procs import end
from _wait import wait_for

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.runtime.runtime import current
from actorhub.wire.records import ActorInfo

INFEASIBLE = "infeasible: requires {CPU: 64} but no node has that many (largest: 2.0 CPUs)"


@actorhub.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "actorhub.cli", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"actorhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def info_of(actor: Any) -> ActorInfo:
    return current().hub.actor_info(actor.actor_id)


def test_an_infeasible_actor_says_why_and_runs_once_a_node_fits_it(
    cluster: actorhub.ClusterContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorhub")
    big = Counter.options(num_cpus=64).remote()
    # A call waits for the actor; the driver is told once why it waits, as Ray warns.
    first_call = big.incr.remote()
    wait_for(lambda: any("cannot be scheduled right now" in r.getMessage() for r in caplog.records),
             "the driver to be warned that the actor cannot be scheduled")
    [warning] = [r.getMessage() for r in caplog.records if "cannot be scheduled" in r.getMessage()]
    assert big.actor_id in warning and INFEASIBLE in warning
    info = info_of(big)
    assert (info.state, info.pending_reason, info.infeasible) == ("PENDING", INFEASIBLE, True)
    # What the driver's connection reads: the raw reply of its WaitActor long poll.
    polled = current().hub.wait_actor(big.actor_id, 0, 0.2)
    assert (polled.pending_reason, polled.infeasible) == (INFEASIBLE, True)
    [listed] = [a for a in current().hub.list_actors("", all_namespaces=True) if a.actor_id == big.actor_id]
    assert listed.pending_reason == INFEASIBLE

    status = cli("status")
    assert "Actors: 1 live (1 PENDING)" in status
    assert "Pending demands: 1 actor not placed, 1 infeasible" in status
    assert f"  1 x Counter: {INFEASIBLE}" in status
    listing = cli("list", "actors")
    assert "Not placed yet:" in listing
    assert f"{big.actor_id}  {INFEASIBLE}" in listing

    process = start_node(Config.load(num_cpus=64), Session(Path(cluster.session_dir)), cluster.address)
    try:
        assert actorhub.get(first_call, timeout=60) == 1
        info = info_of(big)
        assert (info.state, info.pending_reason, info.infeasible) == ("ALIVE", "", False)
        assert info.node_id != cluster.node_id
        assert "Pending demands" not in cli("status")
        assert "Not placed yet" not in cli("list", "actors")
        actorhub.kill(big)
    finally:
        end(process, 15)


def test_an_actor_waiting_for_cpus_held_by_another_is_placed_when_they_are_freed(
    cluster: actorhub.ClusterContext,
) -> None:
    first = Counter.options(num_cpus=2).remote()
    assert actorhub.get(first.incr.remote()) == 1
    second = Counter.options(num_cpus=2).remote()
    info = info_of(second)
    assert (info.state, info.infeasible) == ("PENDING", False)
    assert info.pending_reason == (
        "waiting for resources: requires {CPU: 2} but all nodes that fit it have their CPUs claimed by actors"
        f" or tasks (most available: 0.0 of 2.0 CPUs on node {cluster.node_id})")
    status = cli("status")
    assert "Pending demands: 1 actor not placed, 0 infeasible" in status
    assert f"  1 x Counter: {info.pending_reason}" in status
    actorhub.kill(first)
    assert actorhub.get(second.incr.remote(), timeout=60) == 1
    assert info_of(second).pending_reason == ""
