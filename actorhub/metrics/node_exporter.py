"""A node's Prometheus endpoint, served by its node agent.

Every process of the node writes its values to prometheus_client's multiprocess files in the
node's directory (`metrics/node_dir.py`); a scrape aggregates them with `MultiProcessCollector`
(the library's way to show many processes as one target), after dropping the live gauges of
processes that are gone (`mark_process_dead`), and adds what the agent itself knows: its
object store and its workers. Nothing is computed between scrapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actorhub.cluster.addresses import parse_address
from actorhub.cluster.lifetime import process_alive
from actorhub.config import Config
from actorhub.metrics.node_dir import dir_for

_PID_OF_FILE = re.compile(r"_(\d+)\.db$")


class StoreNumbers(Protocol):
    capacity_bytes: int
    shm_bytes: int
    spilled_bytes: int
    num_objects: int
    num_spilled: int
    spills: int
    restores: int


class NodeCollector(Collector):
    def __init__(
        self, node_id: str, path: Path, store_stats: Callable[[], StoreNumbers],
        worker_counts: Callable[[], tuple[int, int]],
    ) -> None:
        self._node_id = node_id
        self._path = path
        self._processes = multiprocess.MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]
        self._store_stats = store_stats
        self._worker_counts = worker_counts

    def collect(self) -> Iterator[Metric]:
        _forget_dead_processes(self._path)
        yield from self._processes.collect()  # type: ignore[no-untyped-call]
        yield from self._store()
        idle, actors = self._worker_counts()
        workers = GaugeMetricFamily("actorhub_node_workers", "The node's worker processes by state.",
                                    labels=["State", "NodeId"])
        workers.add_metric(["IDLE", self._node_id], idle)
        workers.add_metric(["ACTOR", self._node_id], actors)
        yield workers

    def _store(self) -> Iterator[Metric]:
        stats = self._store_stats()
        node = [self._node_id]
        for name, doc, value in (
            ("actorhub_object_store_capacity_bytes", "The store's size (object_store_memory).", stats.capacity_bytes),
            ("actorhub_object_store_used_bytes", "Bytes of the arena that objects take.", stats.shm_bytes),
            ("actorhub_object_store_spilled_bytes", "Bytes of objects spilled to disk now.", stats.spilled_bytes),
            ("actorhub_object_store_objects", "Objects in the store (spilled ones too).", stats.num_objects),
            ("actorhub_object_store_spilled_objects", "Objects spilled to disk now.", stats.num_spilled),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["NodeId"])
            gauge.add_metric(node, value)
            yield gauge
        for name, doc, value in (
            ("actorhub_object_store_spills", "Objects moved to disk since the node started.", stats.spills),
            ("actorhub_object_store_restores", "Spilled objects moved back since the node started.", stats.restores),
        ):
            counter = CounterMetricFamily(name, doc, labels=["NodeId"])
            counter.add_metric(node, value)
            yield counter


class _Counts(Protocol):
    idle: int
    actors: int


def start_for_node(
    node_id: str, address: str, session_path: Path, store_stats: Callable[[], StoreNumbers],
    worker_counts: Callable[[], _Counts], config: Config,
) -> int:
    """Serve the node's metrics on its advertised host; the port it got (config.metrics_export_port,
    or a free one when that is 0)."""
    path = dir_for(session_path, node_id)
    path.mkdir(parents=True, exist_ok=True)  # made by node/__main__.py; a node started otherwise has none yet

    def workers() -> tuple[int, int]:
        counts = worker_counts()
        return counts.idle, counts.actors

    host = parse_address(address, "the node's address")[0]
    return serve(host, config.metrics_export_port, NodeCollector(node_id, path, store_stats, workers)).server_port


def serve(host: str, port: int, collector: Collector) -> WSGIServer:
    """Serve `collector` at http://host:port/metrics (port 0: a free one) on a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


def _forget_dead_processes(path: Path) -> None:
    """The live gauges of ended processes stop counting (their counters stay, as counts do)."""
    dead: set[int] = set()
    for file in path.glob("gauge_live*.db"):
        match = _PID_OF_FILE.search(file.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid in dead:
            continue
        if not process_alive(pid):
            dead.add(pid)
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
