"""Autoscaling on one machine: `actorhub up` a cluster YAML (a 1-CPU head, 2-CPU workers, at most
two), then demand from tasks, actors and request_resources() brings workers up, idleness takes
them away, demand no type fits is reported and never launched for, and `actorhub down` leaves no
process. The decisions themselves are tested without processes in test_autoscaler_planner.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _drivers import REPO
from _procs import children
from _wait import wait_for

import actorhub
from actorhub.autoscaler.sdk import request_resources
from actorhub.cli.common import live_pids, processes_naming
from actorhub.cluster.session import Session, latest_session
from actorhub.util import placement_group, remove_placement_group

CLUSTER_YAML = """
cluster_name: autoscaled
max_workers: 2
idle_timeout_minutes: 0.025  # 1.5 s
head_node_type: head
available_node_types:
  head:
    resources: {CPU: 1}
    max_workers: 0
    node_config: {prestart_workers: 1, object_store_memory: 100000000}
  worker:
    resources: {CPU: 2}
    min_workers: 0
    max_workers: 2
    node_config: {prestart_workers: 1, object_store_memory: 100000000}
"""


def cli(*args: str, root: Path, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorhub.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "ACTORHUB_SESSION_ROOT": str(root)})


class Autoscaled:
    def __init__(self, root: Path, yaml: Path, session: Session) -> None:
        self.root = root
        self.yaml = yaml
        self.session = session
        self.head = ""

    def log(self) -> str:
        return (self.session.logs / "autoscaler.out").read_text()

    def status(self) -> dict[str, object]:
        try:
            loaded: dict[str, object] = json.loads((self.session.path / "autoscaler-status.json").read_text())
        except (OSError, ValueError):
            return {}
        return loaded


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in actorhub.nodes() if n["Alive"]}


@pytest.fixture(scope="module")
def autoscaled(tmp_path_factory: pytest.TempPathFactory, allowed_process_roots: set[int]) -> Iterator[Autoscaled]:
    root = tmp_path_factory.mktemp("autoscaled-sessions")
    yaml = root.parent / "cluster.yaml"
    yaml.write_text(CLUSTER_YAML)
    old = os.environ.get("ACTORHUB_SESSION_ROOT")
    os.environ["ACTORHUB_SESSION_ROOT"] = str(root)
    started = cli("up", str(yaml), root=root)
    assert started.returncode == 0, started.stderr
    session = latest_session(root)
    roots = set(live_pids(session))  # the hub's supervisor, the head node, the autoscaler
    allowed_process_roots.update(roots)
    cluster = Autoscaled(root, yaml, session)
    try:
        actorhub.init(address="auto")
        [cluster.head] = alive_nodes()
        yield cluster
    finally:
        actorhub.shutdown()
        cli("down", str(yaml), root=root)
        allowed_process_roots.difference_update(roots)
        if old is None:
            os.environ.pop("ACTORHUB_SESSION_ROOT", None)
        else:
            os.environ["ACTORHUB_SESSION_ROOT"] = old


def only_the_head(cluster: Autoscaled) -> None:
    wait_for(lambda: alive_nodes() == {cluster.head}, "the workers to go", 45, 0.2)


def test_a_bad_yaml_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLUSTER_YAML.replace("max_workers: 2\n    node_config", "max_workers: -2\n    node_config"))
    result = cli("up", str(bad), root=tmp_path / "sessions")
    assert result.returncode == 1
    assert "available_node_types.worker.max_workers" in result.stderr
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").glob("session_*"))


def test_waiting_tasks_bring_workers_up_and_idle_workers_go(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)

    @actorhub.remote
    def where() -> str:
        time.sleep(2.0)
        return actorhub.get_runtime_context().get_node_id()

    ran_on = set(actorhub.get([where.remote() for _ in range(4)], timeout=90))
    assert ran_on - {autoscaled.head}, "no task ran on a launched worker"
    assert "launched node" in autoscaled.log()
    only_the_head(autoscaled)
    assert "stopping node" in autoscaled.log() and "idle for" in autoscaled.log()


def test_request_resources_brings_workers_and_withdrawing_it_lets_them_go(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)
    request_resources(num_cpus=4)  # 1 on the head, 2 + 2 on two workers
    wait_for(lambda: len(alive_nodes()) == 3, "two workers", 45, 0.2)
    time.sleep(3.0)  # twice the idle timeout: the request keeps them
    assert len(alive_nodes()) == 3
    request_resources(num_cpus=0)
    only_the_head(autoscaled)


def test_an_actor_that_needs_two_cpus_brings_a_worker(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)

    @actorhub.remote(num_cpus=2)
    class Wide:
        def node(self) -> str:
            return actorhub.get_runtime_context().get_node_id()

    wide = Wide.remote()  # type: ignore[attr-defined]
    assert actorhub.get(wide.node.remote(), timeout=90) != autoscaled.head
    actorhub.kill(wide)
    only_the_head(autoscaled)


def test_a_task_no_node_fits_yet_brings_a_worker(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)

    @actorhub.remote(num_cpus=2)
    def where() -> str:
        return actorhub.get_runtime_context().get_node_id()

    assert actorhub.get(where.remote(), timeout=90) != autoscaled.head  # it waited, reported, for a worker
    only_the_head(autoscaled)


def test_a_worker_holding_objects_is_not_idle_until_they_are_freed(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)

    @actorhub.remote(num_cpus=2)
    def fill() -> np.ndarray:
        return np.ones(1 << 18)  # 2 MiB: stored in the worker's store, for this driver

    ref = fill.remote()
    ready, _ = actorhub.wait([ref], timeout=90)
    assert ready
    time.sleep(3.5)  # past the idle timeout and two rounds: nothing runs there, but it holds the result
    assert len(alive_nodes()) == 2
    del ref, ready
    only_the_head(autoscaled)


def test_demand_no_node_type_fits_is_reported_and_not_launched_for(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)
    launched = autoscaled.log().count("launched node")

    @actorhub.remote(num_cpus=8)
    class Huge:
        pass

    huge = Huge.remote()  # type: ignore[attr-defined]
    wait_for(lambda: {"CPU": 8.0} in autoscaled.status().get("infeasible", []),
             "the infeasible demand in the status", 45, 0.2)
    time.sleep(3.0)  # three more rounds
    assert alive_nodes() == {autoscaled.head}
    log = autoscaled.log()
    assert log.count("launched node") == launched
    assert log.count("infeasible demand {CPU: 8}") == 1, log  # once, not every round
    shown = cli("status", root=autoscaled.root)
    assert "infeasible (no node type fits): {CPU: 8}" in shown.stdout, shown.stdout + shown.stderr
    actorhub.kill(huge)


def test_a_pending_placement_group_brings_a_worker(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")  # the head holds one
    assert group.wait(60)
    assert "placement groups" in autoscaled.log()
    remove_placement_group(group)
    only_the_head(autoscaled)


def test_a_killed_autoscaler_comes_back_and_manages_the_nodes_it_had(autoscaled: Autoscaled) -> None:
    only_the_head(autoscaled)
    request_resources(num_cpus=3)  # 1 on the head, one worker
    wait_for(lambda: len(alive_nodes()) == 2, "a worker", 45, 0.2)
    supervisor = int(autoscaled.session.pid_file("autoscaler").read_text())
    [loop] = children(supervisor)
    os.kill(loop, signal.SIGKILL)
    wait_for(lambda: autoscaled.log().count("nodes it manages: 1") == 1, "a new autoscaler", 45, 0.2)
    assert alive_nodes() != {autoscaled.head}
    request_resources(num_cpus=0)
    only_the_head(autoscaled)  # stopped by the new autoscaler, which did not launch it
    assert children(supervisor) and loop not in children(supervisor)


def test_up_refuses_a_running_name_and_down_leaves_no_process(autoscaled: Autoscaled) -> None:
    again = cli("up", str(autoscaled.yaml), root=autoscaled.root)
    assert again.returncode == 1 and "already runs" in again.stderr
    request_resources(num_cpus=3)  # a worker up, so that down has one to stop
    wait_for(lambda: len(alive_nodes()) == 2, "a worker", 45, 0.2)
    actorhub.shutdown()
    stopped = cli("down", str(autoscaled.yaml), root=autoscaled.root)
    assert stopped.returncode == 0, stopped.stderr
    assert "Stopped cluster 'autoscaled'" in stopped.stdout
    wait_for(lambda: not processes_naming(autoscaled.session), "every process of the cluster to end", 15, 0.2)
    assert not live_pids(autoscaled.session)
    assert "No running cluster named 'autoscaled'" in cli("down", str(autoscaled.yaml), root=autoscaled.root).stdout
