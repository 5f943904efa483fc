"""`actorhub status` and `actorhub list actors`: what a running cluster holds."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actorhub.cli.common import HubClient, cpus, find_cluster, format_table
from actorhub.config import Config
from actorhub.wire.records import ActorInfo, ClusterStatus, NodeStatus

if TYPE_CHECKING:
    from actorhub.wire.records import OwnedObject


def status_command(address: str | None) -> int:
    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        status = hub.status()
    where = f" (session {target.session.path})" if target.session is not None else ""
    print(f"Cluster at {target.address}{where}")
    hub_line = _hub_line(status, time.time())
    if hub_line:
        print(hub_line)
    print()
    now = time.time()
    rows = [
        [n.node_id, n.address, _heartbeat(n.last_heartbeat, now), _other_resources(n.available_resources, n.resources),
         f"{cpus(n.available_cpus)}/{cpus(n.num_cpus)}", _node_state(n)]
        for n in status.nodes
    ]
    alive = sum(1 for n in status.nodes if n.alive)
    print(f"Nodes: {alive} alive, {len(status.nodes) - alive} dead")
    if rows:
        headers = ["NODE ID", "ADDRESS", "LAST HEARTBEAT", "OTHER RESOURCES", "CPUS (AVAILABLE/TOTAL)", "STATE"]
        print(_indent(format_table(headers, rows)))
    endpoints = [f"{n.address.rpartition(':')[0]}:{n.metrics_export_port}"
                 for n in status.nodes if n.alive and n.metrics_export_port]
    if endpoints:
        print(f"Metrics (Prometheus): {', '.join(endpoints)}")
    print()
    # The hub leaves dead actors out of the status, so these are the live ones.
    by_state = Counter(a.state for a in status.actors)
    counts = ", ".join(f"{count} {state}" for state, count in sorted(by_state.items()))
    print(f"Actors: {len(status.actors)} live" + (f" ({counts})" if counts else ""))
    print(f"Jobs: {status.live_jobs} live")
    demands = _pending_demands(status.actors)
    if demands:
        print()
        waiting = sum(count for _, count in demands)
        infeasible = sum(1 for a in status.actors if a.pending_reason and a.infeasible)
        print(f"Pending demands: {waiting} actor{'s' if waiting != 1 else ''} not placed, {infeasible} infeasible")
        for line, count in demands:
            print(f"  {count} x {line}")
    _print_groups(status)
    if target.session is not None:
        from actorhub.cli.autoscale import autoscaler_lines  # a cluster from `actorhub up`

        for line in autoscaler_lines(target.session):
            print(line)
    return 0


def _node_state(node: NodeStatus) -> str:
    if node.alive:
        return "draining" if node.draining else "alive"
    return "drained" if node.drained else "dead"


def _print_groups(status: ClusterStatus) -> None:
    """Placement groups by state, and why each one not CREATED waits."""
    groups = status.placement_groups
    if not groups:
        return
    by_state = Counter(g.state for g in groups)
    print()
    print(f"Placement groups: {len(groups)} (" + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) + ")")
    for g in groups:
        if g.state != "CREATED":
            label = f"{g.name} ({g.group_id})" if g.name else g.group_id
            print(f"  {label} {g.strategy} {g.state}: {g.pending_reason or '-'}")


def _other_resources(available: Sequence[tuple[str, float]], total: Sequence[tuple[str, float]]) -> str:
    """GPU, memory and custom resources as available/total; memory in GiB."""
    free = dict(available)
    parts = []
    for name, amount in total:
        if name.startswith("node:") or "_group_" in name:
            # node:<ip> says nothing about capacity; placement groups' bundle names are the
            # groups' own (listed below), carved out of the resources shown here.
            continue
        if name == "memory":
            parts.append(f"memory {free.get(name, 0.0) / 2**30:.1f}/{amount / 2**30:.1f} GiB")
        else:
            parts.append(f"{name} {free.get(name, 0.0):g}/{amount:g}")
    return ", ".join(parts) or "-"


def _hub_line(status: ClusterStatus, now: float) -> str:
    """The hub's uptime, restarts and store; "" from a hub that does not report them."""
    started_at, restarts, store = status.hub_started_at, status.hub_restarts, status.store_path
    if not started_at:
        return ""
    times = "time" if restarts == 1 else "times"
    line = f"Hub: up {_duration(now - started_at)}, restarted {restarts} {times}"
    return line + (f", store {store}" if store else "")


def _heartbeat(at: float, now: float) -> str:
    """When a node last answered the hub's health check: "17:50:03 (2s ago)", or "never"."""
    if not at:
        return "never"
    shape = "%H:%M:%S" if now - at < 86400 else "%Y-%m-%d %H:%M:%S"
    return f"{time.strftime(shape, time.localtime(at))} ({_duration(now - at)} ago)"


def _duration(seconds: float) -> str:
    """"3d 4h", "2h 0m", "5m 12s", "12s": the largest unit and the next one."""
    left = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next(i for i, (_, size) in enumerate(units) if left >= size or size == 1)
    parts = []
    for unit, size in units[first:first + 2]:
        parts.append(f"{left // size}{unit}")
        left %= size
    return " ".join(parts)


def _pending_demands(actors: Sequence[ActorInfo]) -> list[tuple[str, int]]:
    """Actors waiting for a node, one line per class and reason, infeasible ones first."""
    grouped: Counter[tuple[bool, str, str]] = Counter(
        (not a.infeasible, a.class_name, a.pending_reason) for a in actors if a.pending_reason
    )
    return [(f"{class_name}: {reason}", count) for (_, class_name, reason), count in sorted(grouped.items())]


def list_actors_command(address: str | None, namespace: str | None) -> int:
    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        actors = hub.list_actors(namespace)
    if not actors:
        scope = f"in namespace {namespace!r}" if namespace is not None else "in the cluster"
        print(f"No live actors {scope}.")
        return 0
    rows = [
        [
            a.actor_id,
            a.class_name,
            a.name or "-",
            a.namespace,
            a.state,
            str(a.pid) if a.pid else "-",
            a.node_id or "-",
        ]
        for a in actors
    ]
    print(format_table(["ACTOR ID", "CLASS", "NAME", "NAMESPACE", "STATE", "PID", "NODE"], rows))
    pending = [a for a in actors if a.pending_reason]
    if pending:
        print()
        print("Not placed yet:")
        print(_indent(format_table(["ACTOR ID", "WHY"], [[a.actor_id, a.pending_reason] for a in pending])))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def memory_command(address: str | None) -> int:
    """Every object in the cluster: id, size, owner, who holds refs, where the bytes are.

    Asks each owner (drivers and actors, task executors included) for the objects it owns and
    their borrowers, and each node's store for the bytes it keeps in shared memory or spilled.
    """
    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        return _print_memory(hub.status(), hub)


def _print_memory(status: ClusterStatus, hub: HubClient) -> int:
    from actorhub.exceptions import RpcFailedError
    from actorhub.wire.store import NodeStoreClient
    from actorhub.wire.worker import WorkerClient

    # Store id -> (size, where) on each node holding it: its own node's, and copies pulled elsewhere.
    stored: dict[str, list[tuple[int, str]]] = {}
    for node in status.nodes:
        if not node.alive:
            continue
        try:
            listing = NodeStoreClient(hub.channels, node.address, hub.deadlines).list()
        except RpcFailedError as err:
            print(f"Node {node.node_id} ({node.address}): unreachable ({err.code.name if err.code else 'UNKNOWN'})")
            continue
        print(
            f"Node {node.node_id} ({node.address}): {len(listing.objects)} objects in its store, "
            f"{_mib(listing.used)} in shared memory of {_mib(listing.capacity)}, {_mib(listing.spilled)} spilled"
        )
        for kept in listing.objects:
            stored.setdefault(kept.object_id, []).append((kept.size, f"{kept.where} (node {node.node_id[:8]})"))
    owners = {a: "driver" for a in status.driver_addresses}
    owners.update({a.address: f"{a.class_name} actor {a.actor_id[:8]}" for a in status.actors if a.address})
    rows: list[list[str]] = []
    for owner, label in owners.items():
        try:
            owned = WorkerClient(hub.channels, owner, hub.deadlines, "owner").list_owned_objects()
        except RpcFailedError:
            continue  # gone since the hub answered, or busy: its objects go unlisted
        for o in owned:
            places = stored.get(o.store_id or o.object_id)
            size = places[0][0] if places else o.size
            where = ", ".join(w for _, w in places) if places else o.where
            rows.append([o.object_id, _size(size), f"{label} ({owner})", where, _holders(o, owners)])
    print()
    if rows:
        print(format_table(["OBJECT ID", "SIZE", "OWNER", "WHERE", "HELD BY"], rows))
    else:
        print("No objects.")
    return 0


def _holders(o: OwnedObject, labels: dict[str, str]) -> str:
    """Who keeps an object alive: the owner's own refs, borrowers, values that contain it."""
    parts = []
    if o.local_refs:
        parts.append(f"owner x{o.local_refs}")
    parts.extend(
        f"{labels[b]} ({b}) x{count}" if b in labels else f"{b} x{count}" for b, count in sorted(o.borrowers.items())
    )
    if o.contained_in:
        parts.append(f"inside {o.contained_in} object(s)")
    if o.escaped:
        parts.append("pickled (kept while the owner lives)")
    return ", ".join(parts) or "-"


def _size(size: int) -> str:
    return f"{size} B" if size < 1024 * 1024 else _mib(size)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
