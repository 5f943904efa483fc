"""The hub's Prometheus endpoint and the cluster's list of scrape targets.

The hub is one process: it serves its own endpoint (actors by state, restarts, its own
restarts) rather than writing into the head node's files, so it is scraped even when the head
node is gone. It also keeps `prom_metrics_service_discovery.json` in the session, Prometheus'
file-based service discovery (as Ray writes it): one entry per alive node's endpoint, whose
port the node sent with RegisterNode, and one for the hub. The file is rewritten within a
second of a change, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.cluster.addresses import parse_address
from actorhub.hub.records import HubInfo
from actorhub.metrics.node_dir import SERVICE_DISCOVERY_FILE

log = logging.getLogger(__name__)
_REFRESH_S = 1.0


class HubMetrics(Collector):
    def __init__(
        self, cluster_status: Callable[[], hub_pb2.ClusterStatus], alive_nodes: Callable[[], list[tuple[str, str]]],
        info: HubInfo, session_dir: Path,
    ) -> None:
        self._cluster_status = cluster_status
        self._alive_nodes = alive_nodes
        self._info = info
        self._file = session_dir / SERVICE_DISCOVERY_FILE
        self._node_ports: dict[str, int] = {}
        self.address = ""
        self._stop = threading.Event()

    def start(self, host: str, port: int = 0) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        server, _ = start_http_server(port, addr=host, registry=registry)
        self.address = f"{host}:{server.server_port}"
        threading.Thread(target=self._keep_targets, name="metrics-targets", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def node_registered(self, node_id: str, port: int) -> None:
        if port > 0:
            self._node_ports[node_id] = port

    def stamp(self, status: hub_pb2.ClusterStatus) -> None:
        """Each node's endpoint, for `actorhub status` and `nodes()`."""
        for node in status.nodes:
            node.metrics_export_port = self._node_ports.get(node.node_id, 0)

    # -- the targets ----------------------------------------------------------------------------
    def targets(self) -> list[dict[str, Any]]:
        out = [{"labels": {"job": "actorhub", "actorhub_component": "hub"}, "targets": [self.address]}]
        for node_id, address in self._alive_nodes():
            port = self._node_ports.get(node_id, 0)
            if port:
                host = parse_address(address, "a node's address")[0]
                out.append({"labels": {"job": "actorhub", "actorhub_component": "node", "actorhub_node_id": node_id},
                            "targets": [f"{host}:{port}"]})
        return out

    def _keep_targets(self) -> None:
        written: list[dict[str, Any]] | None = None
        while not self._stop.is_set():
            try:
                targets = self.targets()
                if targets != written:
                    temporary = self._file.with_suffix(".tmp")
                    temporary.write_text(json.dumps(targets, indent=1))
                    os.replace(temporary, self._file)
                    written = targets
            except Exception:  # a failed round is retried next second; the hub serves on
                log.exception("could not write %s", self._file)
            self._stop.wait(_REFRESH_S)

    # -- what a scrape of the hub shows ---------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        status = self._cluster_status()
        by_state: Counter[tuple[str, str]] = Counter()
        restarts: Counter[str] = Counter()
        for actor in status.actors:
            state = common_pb2.ActorState.Name(actor.state).removeprefix("ACTOR_STATE_")
            by_state[(state, actor.class_name)] += 1
            restarts[actor.class_name] += actor.num_restarts
        actors = GaugeMetricFamily("actorhub_actors", "Actors not dead, by state and class.", labels=["State", "Name"])
        for (state, name), count in sorted(by_state.items()):
            actors.add_metric([state, name], count)
        yield actors
        restarted = GaugeMetricFamily("actorhub_actor_restarts", "Restarts of the actors not dead, by class.",
                                      labels=["Name"])
        for name, count in sorted(restarts.items()):
            restarted.add_metric([name], count)
        yield restarted
        nodes = GaugeMetricFamily("actorhub_nodes", "Nodes by state.", labels=["State"])
        nodes.add_metric(["ALIVE"], sum(1 for n in status.nodes if n.alive))
        nodes.add_metric(["DEAD"], sum(1 for n in status.nodes if not n.alive))
        yield nodes
        recoveries = CounterMetricFamily("actorhub_hub_restarts", "Hubs started on this store after the first "
                                         "(each recovered the cluster's state from it).")
        recoveries.add_metric([], self._info.restarts)
        yield recoveries
        started = GaugeMetricFamily("actorhub_hub_start_time_seconds", "Unix time this hub started serving.")
        started.add_metric([], self._info.started_at)
        yield started
