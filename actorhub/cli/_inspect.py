"""`actorhub status` and `actorhub list actors`: what a running cluster holds."""

from __future__ import annotations

from collections import Counter

from actorhub._config import Config
from actorhub.cli._common import HubClient, cpus, find_cluster, format_table, state_name


def status_command(address: str | None) -> int:
    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        status = hub.status()
    where = f" (session {target.session.path})" if target.session is not None else ""
    print(f"Cluster at {target.address}{where}")
    print()
    rows = [
        [n.node_id, n.address, f"{cpus(n.available_cpus)}/{cpus(n.num_cpus)}", "alive" if n.alive else "dead"]
        for n in status.nodes
    ]
    alive = sum(1 for n in status.nodes if n.alive)
    print(f"Nodes: {alive} alive, {len(status.nodes) - alive} dead")
    if rows:
        print(_indent(format_table(["NODE ID", "ADDRESS", "CPUS (AVAILABLE/TOTAL)", "STATE"], rows)))
    print()
    # The hub leaves dead actors out of the status, so these are the live ones.
    by_state = Counter(state_name(a.state) for a in status.actors)
    counts = ", ".join(f"{count} {state}" for state, count in sorted(by_state.items()))
    print(f"Actors: {len(status.actors)} live" + (f" ({counts})" if counts else ""))
    print(f"Jobs: {status.live_jobs} live")
    return 0


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
            state_name(a.state),
            str(a.pid) if a.pid else "-",
            a.node_id or "-",
        ]
        for a in actors
    ]
    print(format_table(["ACTOR ID", "CLASS", "NAME", "NAMESPACE", "STATE", "PID", "NODE"], rows))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def memory_command(address: str | None) -> int:
    """Objects in each node's store: id, size, owner and where the bytes are.

    Objects under 100 KiB are kept inline by their owners and are not in any store.
    """
    import grpc

    from actorhub._proto.v1 import common_pb2, node_pb2_grpc
    from actorhub._transport import open_channel

    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        status = hub.status()
    for node in status.nodes:
        if not node.alive:
            continue
        channel = open_channel(node.address, target.token)
        try:
            listing = node_pb2_grpc.NodeStub(channel).ListObjects(common_pb2.Empty(), timeout=10)
        except grpc.RpcError as err:
            print(f"Node {node.node_id} ({node.address}): unreachable ({err.code().name})")
            continue
        finally:
            channel.close()
        print(
            f"Node {node.node_id} ({node.address}): {len(listing.objects)} objects, "
            f"{_mib(listing.used)} in shared memory of {_mib(listing.capacity)}, {_mib(listing.spilled)} spilled"
        )
        rows = [[o.object_id, _mib(o.size), o.owner, o.where] for o in listing.objects]
        if rows:
            print(_indent(format_table(["OBJECT ID", "SIZE", "OWNER", "WHERE"], rows)))
    print("Objects under 100 KiB are held inline by their owners and are not listed.")
    return 0


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
