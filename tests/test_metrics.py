"""Prometheus metrics: every target the head lists is scraped over HTTP and parsed with
prometheus_client's own parser; the values follow what the cluster did."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import end
from _wait import wait_for
from prometheus_client.parser import text_string_to_metric_families

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import TaskError
from actorhub.metrics.node_dir import SERVICE_DISCOVERY_FILE
from actorhub.runtime.runtime import current
from actorhub.util import metrics

Sample = tuple[str, dict[str, str], float]


def _targets(session_dir: str) -> list[dict[str, Any]]:
    path = Path(session_dir) / SERVICE_DISCOVERY_FILE
    if not path.exists():
        return []
    listed: list[dict[str, Any]] = json.loads(path.read_text())
    return listed


def _scrape(target: str) -> list[Sample]:
    """A target that does not answer (a hub being replaced) shows nothing, as to Prometheus."""
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return []
    families = text_string_to_metric_families(text)
    return [(s.name, dict(s.labels), s.value) for family in families for s in family.samples]


def _scrape_all(session_dir: str) -> list[Sample]:
    return [s for entry in _targets(session_dir) for target in entry["targets"] for s in _scrape(target)]


def _total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == want for k, want in labels.items()))


def _scrape_until(session_dir: str, check: Callable[[list[Sample]], bool], timeout: float = 20.0) -> list[Sample]:
    """Scrape until `check` holds: workers publish their counts once a second."""
    return wait_for(lambda: _scrape_all(session_dir), "the metrics to satisfy the check", timeout, 0.3, ok=check)


@actorhub.remote
class Worker:
    def __init__(self) -> None:
        self.requests = metrics.Counter("app_requests", "Requests served.", tag_keys=("route",))
        self.requests.set_default_tags({"route": "/"})
        self.in_flight = metrics.Gauge("app_in_flight", "Requests under way.", tag_keys=("route",))
        self.latency = metrics.Histogram("app_latency_s", "Latency.", boundaries=[0.1, 1.0], tag_keys=("route",))

    def serve(self) -> int:
        self.requests.inc(2.0, tags={"route": "/api"})
        self.requests.inc()
        self.in_flight.set(7, tags={"route": "/api"})
        self.latency.observe(0.5, tags={"route": "/api"})
        return 1

    def wait_for(self, path: str) -> None:
        while not os.path.exists(path):
            time.sleep(0.02)

    def ping(self) -> int:
        return os.getpid()

    def crash(self) -> None:
        os._exit(1)


@actorhub.remote
def plus_one(x: int) -> int:
    return x + 1


@actorhub.remote(max_retries=0)
def fails() -> None:
    raise ValueError("no")


@pytest.fixture
def second_node(cluster: actorhub.ClusterContext) -> Iterator[str]:
    before = {n.node_id for n in current().hub.cluster_status().nodes}
    process = start_node(Config.load(num_cpus=1), Session(Path(cluster.session_dir)), cluster.address)
    try:
        deadline = time.monotonic() + 20
        while not (added := {n.node_id for n in current().hub.cluster_status().nodes if n.alive} - before):
            assert time.monotonic() < deadline, "the second node never registered"
            time.sleep(0.05)
        yield added.pop()
    finally:
        end(process)


def test_every_listed_target_shows_the_clusters_calls_tasks_store_restarts_and_user_metrics(
    cluster: actorhub.ClusterContext, second_node: str, tmp_path: Path
) -> None:
    session = cluster.session_dir
    worker = Worker.options(max_restarts=1).remote()
    pid = actorhub.get(worker.ping.remote())
    assert actorhub.get([worker.serve.remote() for _ in range(5)]) == [1] * 5
    assert actorhub.get([plus_one.remote(i) for i in range(4)]) == [1, 2, 3, 4]
    with pytest.raises(TaskError):
        actorhub.get(fails.remote())
    big = actorhub.put(np.zeros(4 << 20, dtype=np.uint8))
    driver_counter = metrics.Counter("driver_events", tag_keys=("kind",))
    driver_counter.inc(3, tags={"kind": "started"})

    # A blocked actor: the calls behind the one that waits are queued in its mailbox.
    released = tmp_path / "release"
    blocked = worker.wait_for.remote(str(released))
    queued = [worker.ping.remote() for _ in range(3)]
    samples = _scrape_until(session, lambda s: _total(s, "actorhub_actor_queue_depth", Name="Worker") >= 3)
    assert _total(samples, "actorhub_actor_calls_running", Name="Worker") == 1
    released.touch()
    actorhub.get([blocked, *queued])
    # Calls by state, counted in the actor's worker (published once a second).
    samples = _scrape_until(session, lambda s: _total(s, "actorhub_actor_calls_total", State="FINISHED",
                                                      Name="Worker") >= 10)
    assert _total(samples, "actorhub_actor_calls_total", State="SUBMITTED", Name="Worker") == 10
    assert _total(samples, "actorhub_actor_calls_total", State="FAILED", Name="Worker") == 0
    assert _total(samples, "actorhub_actor_queue_depth", Name="Worker") == 0

    # Restart it once.
    worker.crash.remote()
    deadline = time.monotonic() + 30
    while True:
        try:
            if actorhub.get(worker.ping.remote(), timeout=10) != pid:
                break
        except actorhub.exceptions.ActorError:
            pass
        assert time.monotonic() < deadline, "the actor never restarted"
        time.sleep(0.1)
    # User metrics write through at once: the first incarnation's counts stay; its gauge went with it.
    actorhub.get(worker.serve.remote())

    def settled(s: list[Sample]) -> bool:
        return (_total(s, "actorhub_actor_restarts", Name="Worker") == 1
                and _total(s, "actorhub_tasks_total", State="FINISHED", Name="plus_one") >= 4
                and _total(s, "actorhub_object_store_capacity_bytes", NodeId=second_node) > 0)

    samples = _scrape_until(session, settled)
    # The first incarnation's counts outlive it (counters); a crash loses what it had not published.
    assert _total(samples, "actorhub_actor_calls_total", State="FINISHED", Name="Worker") >= 10
    assert _total(samples, "actorhub_tasks_total", State="FAILED", Name="fails") == 1
    assert _total(samples, "actorhub_tasks_total", State="SUBMITTED", Name="plus_one") == 4
    # The head node's store holds the put; its desk lends from 2 CPUs.
    head = cluster.node_id
    assert _total(samples, "actorhub_object_store_used_bytes", NodeId=head) >= 4 << 20
    assert _total(samples, "actorhub_object_store_objects", NodeId=head) >= 1
    assert _total(samples, "actorhub_lease_desk_cpus", Kind="total", NodeId=head) == 2
    # The hub's own target: actors by state, no hub restart.
    assert _total(samples, "actorhub_actors", State="ALIVE", Name="Worker") == 1
    assert _total(samples, "actorhub_hub_restarts_total") == 0
    assert _total(samples, "actorhub_nodes", State="ALIVE") == 2
    # User metrics, prefixed actorhub_ as Ray prefixes them ray_, with their tags.
    assert _total(samples, "actorhub_app_requests_total", route="/api") == 12
    assert _total(samples, "actorhub_app_requests_total", route="/") == 6
    assert _total(samples, "actorhub_app_in_flight", route="/api") == 7
    assert _total(samples, "actorhub_app_latency_s_bucket", route="/api", le="1.0") == 6
    assert _total(samples, "actorhub_app_latency_s_bucket", route="/api", le="0.1") == 0
    assert _total(samples, "actorhub_app_latency_s_count", route="/api") == 6
    assert _total(samples, "actorhub_driver_events_total", kind="started") == 3

    # The head lists one target per node and the hub's; status shows each node's port.
    listed = _targets(session)
    components = sorted(e["labels"]["actorhub_component"] for e in listed)
    assert components == ["hub", "node", "node"]
    assert {e["labels"].get("actorhub_node_id") for e in listed} >= {head, second_node}
    ports = {n.node_id: n.metrics_export_port for n in current().hub.cluster_status().nodes if n.alive}
    assert all(port > 0 for port in ports.values()) and len(ports) == 2
    del big


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: metrics.Counter(""), ValueError, "Empty name is not allowed"),
        (lambda: metrics.Counter("1abc"), ValueError, "Invalid metric name: 1abc"),
        (lambda: metrics.Gauge("bad-name"), ValueError, "Invalid metric name"),
        (lambda: metrics.Counter("ok", tag_keys=["a"]), TypeError, "tag_keys should be a tuple type"),
        (lambda: metrics.Counter("ok", tag_keys=(1,)), TypeError, "Tag keys must be str"),
        (lambda: metrics.Histogram("h"), ValueError, "boundaries argument should be provided"),
        (lambda: metrics.Histogram("h", boundaries=[1.0, 0.0]), ValueError, "Invalid `boundaries` argument at index 1"),
        (lambda: metrics.Counter("ok", tag_keys=("a",)).set_default_tags({"b": "x"}), ValueError,
         "Unrecognized tag key b"),
        (lambda: metrics.Counter("ok", tag_keys=("a",)).inc(), ValueError, "Missing value for tag key\\(s\\): a"),
        (lambda: metrics.Counter("ok").inc(0), ValueError, "value must be >0, got 0"),
        (lambda: metrics.Gauge("ok", tag_keys=("a",)).set(1, tags={"a": 1}), TypeError, "Tag values must be str"),
    ],
)
def test_bad_metrics_and_records_raise_as_in_ray(make: Callable[[], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_a_restarted_hub_counts_its_recovery_and_lists_the_nodes_again(session_root: Path) -> None:
    cluster = actorhub.init(num_cpus=1, include_dashboard=True)
    try:
        _hub_restart(cluster)
    finally:
        actorhub.shutdown()


def _hub_restart(cluster: actorhub.ClusterContext) -> None:
    session = cluster.session_dir
    _scrape_until(session, lambda s: _total(s, "actorhub_nodes", State="ALIVE") == 1
                  and _total(s, "actorhub_object_store_capacity_bytes", NodeId=cluster.node_id) > 0)
    # The dashboard serves the same targets, to the cluster's token only.
    assert cluster.dashboard_url
    url = f"http://{cluster.dashboard_url.removeprefix('http://')}/api/prometheus/sd"
    token = Session(Path(session)).token
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})) as reply:
        assert json.loads(reply.read()) == _targets(session)
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(url)
    hub_pid = int(Session(Path(session)).pid_file("hub").read_text())
    os.kill(hub_pid, signal.SIGKILL)

    def recovered(s: list[Sample]) -> bool:
        # The new hub serves a new endpoint; the node registered again with its port.
        return (_total(s, "actorhub_hub_restarts_total") == 1
                and _total(s, "actorhub_object_store_capacity_bytes", NodeId=cluster.node_id) > 0)

    _scrape_until(session, recovered, timeout=40)
