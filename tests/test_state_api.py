"""`actorhub.util.state` (Ray's state API) and `actorhub list KIND` (issue 13, point 5): one
cluster with a dashboard, read through the Python API and the CLI, with Ray's filters, and bad
filters refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from _wait import wait_for
from conftest import module_cluster

import actorhub
from actorhub.job_submission import JobStatus, JobSubmissionClient
from actorhub.util import state
from actorhub.util.placement_group import placement_group, remove_placement_group


@actorhub.remote
class Counter:
    def incr(self) -> int:
        return 1


@actorhub.remote
def square(x: int) -> int:
    return x * x


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with module_cluster(tmp_path_factory.mktemp("state-sessions"), num_cpus=2, include_dashboard=True) as context:
        named = Counter.options(name="svc", namespace="shop").remote()
        doomed = Counter.remote()
        assert actorhub.get([named.incr.remote(), doomed.incr.remote()], timeout=60) == [1, 1]
        actorhub.kill(doomed)
        assert actorhub.get([square.remote(i) for i in range(5)], timeout=60) == [0, 1, 4, 9, 16]
        blob = actorhub.put(b"x" * 300_000)
        group = placement_group([{"CPU": 0.5}], name="pg-a")
        assert group.wait(30)
        yield {"context": context, "named": named, "doomed": doomed, "blob": blob, "group": group,
               "env": dict(os.environ)}
        remove_placement_group(group)


def test_actors_with_filters_and_get_actor(ctx: dict[str, Any]) -> None:
    doomed = ctx["doomed"]
    in_shop = state.list_actors(filters=[("ray_namespace", "=", "shop")])
    assert [(a.name, a.class_name, a.state) for a in in_shop] == [("svc", "Counter", "ALIVE")]
    assert in_shop[0]["state"] == "ALIVE" and in_shop[0].pid > 0 and in_shop[0].node_id
    dead = wait_for(lambda: state.list_actors(filters=[("state", "=", "dead")]), "a dead actor to be listed", 20, 0.2)
    assert [a.actor_id for a in dead] == [doomed.actor_id]
    assert dead[0].death_cause is not None and dead[0].death_cause["actor_died_error_context"]["error_message"]
    alive = state.list_actors(filters=[("state", "!=", "DEAD")])
    assert alive and all(a.state != "DEAD" for a in alive)
    assert not any(a.ray_namespace == "_actorhub" for a in state.list_actors())  # actorhub's own are left out
    found = state.get_actor(in_shop[0].actor_id)
    assert found is not None and found.name == "svc" and found.is_detached is False
    assert state.get_actor("f" * 32) is None


def test_nodes_tasks_objects_and_placement_groups(ctx: dict[str, Any]) -> None:
    (node,) = state.list_nodes()
    assert node.state == "ALIVE" and node.is_head_node and node.resources_total["CPU"] == 2
    assert node.object_store_capacity_bytes > 0
    again = state.get_node(node.node_id)
    assert again is not None and again.node_id == node.node_id and again.is_head_node
    assert state.get_node("0" * 32) is None
    # Executors publish their counts once a second.
    finished = wait_for(lambda: state.list_tasks(filters=[("name", "=", "square"), ("state", "=", "FINISHED")]),
                        "five finished square tasks", 20, 0.2, ok=lambda rows: sum(r.count for r in rows) >= 5)
    assert sum(r.count for r in finished) >= 5 and finished[0].node_id == node.node_id
    summary = state.summarize_tasks()["cluster"]["summary"]
    assert summary["square"]["state_counts"]["FINISHED"] >= 5
    blob_id = ctx["blob"].hex()
    (obj,) = state.list_objects(filters=[("object_id", "=", blob_id)])
    assert obj.object_size >= 300_000 and obj.owner == "driver" and obj.task_status == "FINISHED"
    assert obj.node_ids == [node.node_id]
    (group,) = state.list_placement_groups(filters=[("name", "=", "pg-a")])
    assert group.state == "CREATED" and group.bundles == [
        {"bundle_id": 0, "node_id": node.node_id, "unit_resources": {"CPU": 0.5}}]
    assert state.get_placement_group(group.placement_group_id) == group


def test_jobs_are_listed_and_filtered_by_status(ctx: dict[str, Any]) -> None:
    client = JobSubmissionClient()
    submission = client.submit_job(entrypoint="echo state-api")
    wait_for(lambda: client.get_job_status(submission), "the job to end", 20, 0.2,
             ok=lambda s: s in (JobStatus.SUCCEEDED, JobStatus.FAILED))
    done = state.list_jobs(filters=[("status", "=", "SUCCEEDED")])
    assert submission in [j.submission_id for j in done]
    assert not state.list_jobs(filters=[("submission_id", "=", "no-such-job")])


def test_bad_filters_limits_and_timeouts_are_refused_by_name(ctx: dict[str, Any]) -> None:
    with pytest.raises(state.RayStateApiException, match=r"no such column.*actor_id"):
        state.list_actors(filters=[("colour", "=", "red")])
    with pytest.raises(state.StateApiError, match="predicate '~'"):
        state.list_actors(filters=[("state", "~", "ALIVE")])
    with pytest.raises(state.StateApiError, match="'many' is not a int"):
        state.list_actors(filters=[("pid", "=", "many")])
    with pytest.raises(state.StateApiError, match="expected a"):
        state.list_nodes(filters=[("state", "=")])  # type: ignore[list-item]
    with pytest.raises(state.StateApiError, match="limit=0"):
        state.list_nodes(limit=0)
    with pytest.raises(state.StateApiError, match="timeout"):
        state.list_nodes(timeout=0)
    assert state.list_nodes(filters=[("is_head_node", "=", "true")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = state.list_actors(limit=1)
    assert len(rows) == 1
    assert any("returning the first 1" in str(w.message) for w in caught)


def _cli(ctx: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actorhub.cli", "list", *args], capture_output=True, text=True,
                          timeout=60, env=ctx["env"])


def test_the_cli_lists_every_kind(ctx: dict[str, Any]) -> None:
    nodes = _cli(ctx, "nodes", "--format", "json")
    assert nodes.returncode == 0, nodes.stderr
    (node,) = json.loads(nodes.stdout)
    assert node["state"] == "ALIVE" and node["is_head_node"] is True
    dead = _cli(ctx, "actors", "--filter", "state=DEAD")
    assert dead.returncode == 0 and "DEAD" in dead.stdout and "ALIVE" not in dead.stdout, dead
    tasks = _cli(ctx, "tasks", "--filter", "name=square")
    assert tasks.returncode == 0 and "square" in tasks.stdout and "FINISHED" in tasks.stdout, tasks
    objects = _cli(ctx, "objects", "--filter", f"object_id={ctx['blob'].hex()}")
    assert objects.returncode == 0 and ctx["blob"].hex() in objects.stdout, objects
    groups = _cli(ctx, "placement-groups")
    assert groups.returncode == 0 and "pg-a" in groups.stdout and "CREATED" in groups.stdout, groups
    jobs = _cli(ctx, "jobs", "--format", "json")
    assert jobs.returncode == 0 and isinstance(json.loads(jobs.stdout), list), jobs
    bad = _cli(ctx, "nodes", "--filter", "colour=red")
    assert bad.returncode == 1 and "no such column" in bad.stderr and "Traceback" not in bad.stderr, bad
