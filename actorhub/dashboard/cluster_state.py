"""What a running cluster holds, read from where it lives: the hub (nodes, actors, placement
groups), each node's store (bytes kept there), each owner (the objects it owns) and each node's
Prometheus endpoint (tasks by state, as the executors count them).

Plain blocking reads with no HTTP framework in them: the dashboard's routes run them on
threads (`state_routes.py`), and anything else that lists the cluster's state can call them
as they are. Rows are frozen dataclasses, so a caller turns them into JSON with `asdict`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.wire.hub import HubClient
from actorhub.wire.records import ActorInfo, ClusterStatus, NodeStatus
from actorhub.wire.store import NodeStoreClient, StoreListing
from actorhub.wire.transport import ChannelPool
from actorhub.wire.worker import WorkerClient

# A page polls every second or two: a peer that takes longer than this is reported, not waited for.
READ_DEADLINES = RpcDeadlines(control_s=5.0, store_s=3.0, owner_s=3.0, unavailable_retry_s=0.0)
# The hub may be restarting (its supervisor brings it back within about a second).
HUB_RECONNECT_S = 2.0
METRICS_TIMEOUT_S = 2.0
HEAD_RESOURCE = "node:__internal_head__"
TASK_STATES = ("RUNNING", "FINISHED", "FAILED")


@dataclass(frozen=True)
class StoreUsage:
    capacity: int
    used: int
    spilled: int
    objects: int


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    address: str
    alive: bool
    is_head: bool
    pid: int
    last_heartbeat: float
    resources_total: dict[str, float]
    """CPU, GPU, memory and custom resources; `node:` markers and placement groups' bundle
    resources (carved out of these) left out."""
    resources_available: dict[str, float]
    metrics_export_port: int
    object_store: StoreUsage | None
    """None for a dead node, or one whose store did not answer."""
    drain_state: str = ""
    """"draining" while `actorhub drain` takes it down, "drained" once it did; else ""."""


@dataclass(frozen=True)
class ActorRow:
    actor_id: str
    class_name: str
    name: str
    namespace: str
    state: str
    pid: int
    node_id: str
    address: str
    incarnation: int
    num_restarts: int
    death_cause: str
    owner_job_id: str
    detached: bool
    is_async: bool
    pending_reason: str
    infeasible: bool
    methods: list[str]
    system: bool
    """actorhub's own (lease desks, task executors), in its system namespace."""


@dataclass(frozen=True)
class TaskRow:
    """Tasks of one name on one node, by state, since the cluster started."""

    name: str
    node_id: str
    submitted: int
    """Reached an executor."""
    running: int
    finished: int
    failed: int


@dataclass(frozen=True)
class ObjectRow:
    object_id: str
    size: int
    """Bytes: in a store (as the store has it) or inline in the owner's memory."""
    where: str
    """"inline", "store", "pending" or "error" at the owner; with the stores that keep it."""
    stored_on: list[str]
    """Node ids whose store holds it (the owner's node's, and copies pulled elsewhere)."""
    owner_address: str
    owner: str
    """"driver", or "<Class> actor <id>"."""
    owner_actor_id: str
    local_refs: int
    borrowers: dict[str, int]


@dataclass(frozen=True)
class ObjectListing:
    objects: list[ObjectRow]
    unreachable: list[str]
    """Owners and stores that did not answer: their objects are missing from the list."""


@dataclass(frozen=True)
class PlacementGroupRow:
    placement_group_id: str
    name: str
    namespace: str
    strategy: str
    state: str
    bundles: list[dict[str, float]]
    bundle_node_ids: list[str]
    detached: bool
    creator_job_id: str
    pending_reason: str
    infeasible: bool


class ClusterStateReader:
    """One cluster's state, read fresh on every call (nothing is cached between reads)."""

    def __init__(self, channels: ChannelPool, hub_address: str, deadlines: RpcDeadlines = READ_DEADLINES) -> None:
        self._channels = channels
        self._deadlines = deadlines
        hub_deadlines = deadlines.model_copy(update={"unavailable_retry_s": HUB_RECONNECT_S})
        self._hub = HubClient(channels, hub_address, hub_deadlines, reconnect_s=HUB_RECONNECT_S)

    def status(self) -> ClusterStatus:
        return self._hub.cluster_status()

    def nodes(self, status: ClusterStatus | None = None) -> list[NodeRow]:
        status = status or self.status()
        return [_node_row(n, self._store_usage(n)) for n in status.nodes]

    def node(self, node_id: str, status: ClusterStatus | None = None) -> NodeRow | None:
        """None for a node the hub does not know."""
        status = status or self.status()
        found = next((n for n in status.nodes if n.node_id == node_id), None)
        return _node_row(found, self._store_usage(found)) if found is not None else None

    def actors(self) -> list[ActorRow]:
        """Every actor the hub keeps, dead ones (the newest `max_dead_actors`) included."""
        return [_actor_row(a) for a in self._hub.list_actors("", all_namespaces=True, include_dead=True)]

    def actor(self, actor_id: str) -> ActorRow:
        """ValueError for an actor the hub does not know."""
        return _actor_row(self._hub.actor_info(actor_id))

    def placement_groups(self, status: ClusterStatus | None = None) -> list[PlacementGroupRow]:
        status = status or self.status()
        return [
            PlacementGroupRow(
                placement_group_id=g.group_id, name=g.name, namespace=g.namespace, strategy=g.strategy,
                state=g.state, bundles=[dict(b) for b in g.bundles], bundle_node_ids=list(g.bundle_node_ids),
                detached=g.detached, creator_job_id=g.creator_job_id, pending_reason=g.pending_reason,
                infeasible=g.infeasible,
            )
            for g in status.placement_groups
        ]

    def tasks(self, status: ClusterStatus | None = None) -> list[TaskRow]:
        """Tasks by name and node, from each alive node's metrics (published by the executors
        once a second, so a task shows up to a second late). Tasks still queued at their
        submitter have not reached a node and are not counted."""
        status = status or self.status()
        rows: list[TaskRow] = []
        for node in status.nodes:
            if node.alive and node.metrics_export_port:
                rows.extend(_scrape_tasks(f"{node.address.rpartition(':')[0]}:{node.metrics_export_port}"))
        return sorted(rows, key=lambda r: (r.name, r.node_id))

    def objects(self, status: ClusterStatus | None = None) -> ObjectListing:
        """Every owner's objects (drivers and actors, task executors included), with the sizes
        and places the node stores report."""
        status = status or self.status()
        unreachable: list[str] = []
        stored: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
        for node in status.nodes:
            if not node.alive:
                continue
            listing = self._store_listing(node)
            if listing is None:
                unreachable.append(f"the store of node {node.node_id} ({node.address})")
                continue
            for kept in listing.objects:
                stored[kept.object_id].append((kept.size, node.node_id))
        owners: dict[str, tuple[str, str]] = {address: ("driver", "") for address in status.driver_addresses}
        owners.update({a.address: (f"{a.class_name} actor {a.actor_id}", a.actor_id)
                       for a in status.actors if a.address})
        rows: list[ObjectRow] = []
        for address, (label, actor_id) in owners.items():
            try:
                owned = WorkerClient(self._channels, address, self._deadlines, "owner").list_owned_objects()
            except RpcFailedError:
                unreachable.append(f"{label} ({address})")  # gone since the hub answered, or busy
                continue
            for o in owned:
                places = stored.get(o.store_id or o.object_id, [])
                rows.append(ObjectRow(
                    object_id=o.object_id, size=places[0][0] if places else o.size, where=o.where,
                    stored_on=[node_id for _, node_id in places], owner_address=address, owner=label,
                    owner_actor_id=actor_id, local_refs=o.local_refs, borrowers=dict(o.borrowers),
                ))
        return ObjectListing(rows, unreachable)

    def _store_listing(self, node: NodeStatus) -> StoreListing | None:
        try:
            return NodeStoreClient(self._channels, node.address, self._deadlines).list()
        except RpcFailedError:
            return None

    def _store_usage(self, node: NodeStatus) -> StoreUsage | None:
        listing = self._store_listing(node) if node.alive else None
        if listing is None:
            return None
        return StoreUsage(listing.capacity, listing.used, listing.spilled, len(listing.objects))


def tasks_by_state(rows: Iterable[TaskRow]) -> dict[str, int]:
    totals = dict.fromkeys(TASK_STATES, 0)
    for row in rows:
        totals["RUNNING"] += row.running
        totals["FINISHED"] += row.finished
        totals["FAILED"] += row.failed
    return totals


def _shown_resources(resources: Iterable[tuple[str, float]]) -> dict[str, float]:
    # node:<ip> says nothing about capacity; bundle resources are the groups' own, shown with them.
    return {name: amount for name, amount in resources if not name.startswith("node:") and "_group_" not in name}


def _node_row(node: NodeStatus, store: StoreUsage | None) -> NodeRow:
    return NodeRow(
        node_id=node.node_id, address=node.address, alive=node.alive,
        is_head=any(name == HEAD_RESOURCE for name, _ in node.resources), pid=node.pid,
        last_heartbeat=node.last_heartbeat,
        resources_total={"CPU": node.num_cpus, **_shown_resources(node.resources)},
        resources_available={"CPU": node.available_cpus, **_shown_resources(node.available_resources)},
        metrics_export_port=node.metrics_export_port, object_store=store,
        drain_state="drained" if node.drained else "draining" if node.draining else "",
    )


def _actor_row(a: ActorInfo) -> ActorRow:
    return ActorRow(
        actor_id=a.actor_id, class_name=a.class_name, name=a.name, namespace=a.namespace, state=a.state,
        pid=a.pid, node_id=a.node_id, address=a.address, incarnation=a.incarnation, num_restarts=a.num_restarts,
        death_cause=a.death_cause, owner_job_id=a.owner_job_id, detached=a.detached, is_async=a.is_async,
        pending_reason=a.pending_reason, infeasible=a.infeasible, methods=[m.name for m in a.methods],
        system=a.namespace == SYSTEM_NAMESPACE,
    )


def _scrape_tasks(endpoint: str) -> list[TaskRow]:
    """A node's task counts; none from an endpoint that does not answer (the node may be going)."""
    try:
        text = httpx.get(f"http://{endpoint}/metrics", timeout=METRICS_TIMEOUT_S).text
    except httpx.HTTPError:
        return []
    counts: dict[tuple[str, str], dict[str, int]] = collections.defaultdict(lambda: collections.Counter())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.labels.get("Name", ""), sample.labels.get("NodeId", ""))
            if sample.name == "actorhub_tasks_total":
                counts[key][sample.labels.get("State", "")] += int(sample.value)
            elif sample.name == "actorhub_tasks_running":
                counts[key]["RUNNING"] += int(sample.value)
    return [
        TaskRow(name=name, node_id=node_id, submitted=c["SUBMITTED"], running=c["RUNNING"],
                finished=c["FINISHED"], failed=c["FAILED"])
        for (name, node_id), c in counts.items()
    ]


def as_json(row: object) -> object:
    """A row (or list of rows) as JSON-ready dicts."""
    if isinstance(row, list):
        return [as_json(r) for r in row]
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    return row
