"""`nodes`, `cluster_resources`, `available_resources`: Ray's views of what the cluster has.

Resources are Ray's names: "CPU", "GPU", "memory", custom names as nodes declare them,
"object_store_memory" (bytes of each node's store), one "node:<ip>" per node and
"node:__internal_head__" on the head's (nodes offer these two: node/offered.py). What actors
and tasks hold of the non-CPU ones is counted by the hub. Available CPUs are what neither
actors reserve nor tasks lease: a node's lease desk knows both once tasks have run there;
before that, the hub's count of actor reservations is the whole story.
"""

from __future__ import annotations

from typing import Any

from actorhub.api.cluster import connected_runtime
from actorhub.exceptions import RpcFailedError
from actorhub.namespaces.lookup import get_system_actor
from actorhub.runtime import runtime as _runtime
from actorhub.wire.records import ClusterStatus
from actorhub.wire.store import NodeStoreClient, StoreListing


def nodes() -> list[dict[str, Any]]:
    """One dict per node the cluster has known, alive or dead, in Ray's layout."""
    runtime = connected_runtime()
    out = []
    for node in _status(runtime).nodes:
        host, _, port = node.address.rpartition(":")
        resources = {"CPU": node.num_cpus, **dict(node.resources)}  # node:<ip> among them
        if node.alive:
            listing = _store_listing(runtime, node.address)
            if listing is not None:
                resources["object_store_memory"] = float(listing.capacity)
        out.append({
            "NodeID": node.node_id,
            "Alive": node.alive,
            "NodeManagerAddress": host,
            "NodeManagerPort": int(port) if port.isdigit() else 0,
            "MetricsExportPort": node.metrics_export_port,  # its Prometheus endpoint, on NodeManagerAddress
            "Resources": resources,
        })
    return out


def cluster_resources() -> dict[str, float]:
    """The resources of the alive nodes, added up."""
    total: dict[str, float] = {}
    for node in nodes():
        if node["Alive"]:
            for name, amount in node["Resources"].items():
                total[name] = total.get(name, 0.0) + amount
    return total


def available_resources() -> dict[str, float]:
    """What the alive nodes have free now: CPUs not reserved or leased, store bytes not in use."""
    from actorhub.tasks.lease_desk import desk_name

    runtime = connected_runtime()
    free: dict[str, float] = {}
    for node in _status(runtime).nodes:
        if not node.alive:
            continue
        cpus = node.available_cpus
        try:
            # The internal lookup: the public get_actor refuses the system namespace.
            desk = get_system_actor(runtime, desk_name(node.node_id))
        except ValueError:
            desk = None  # no task has run there yet
        if desk is not None:
            stats = runtime.get([desk.stats.remote()], 10.0)[0]
            cpus = min(cpus, stats["free"])
        free["CPU"] = free.get("CPU", 0.0) + max(cpus, 0.0)
        for name, amount in node.available_resources:  # node:<ip> among them
            free[name] = free.get(name, 0.0) + max(amount, 0.0)
        listing = _store_listing(runtime, node.address)
        if listing is not None:
            free["object_store_memory"] = free.get("object_store_memory", 0.0) + float(
                max(listing.capacity - listing.used, 0)
            )
    return free


def _status(runtime: _runtime.Runtime) -> ClusterStatus:
    return runtime.hub.cluster_status()


def _store_listing(runtime: _runtime.Runtime, address: str) -> StoreListing | None:
    try:
        return NodeStoreClient(runtime.channels, address, runtime.deadlines).list()
    except RpcFailedError:
        return None  # died since the hub answered
