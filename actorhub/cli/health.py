"""`actorhub health-check`: what readiness and liveness probes run (Kubernetes exec probes).

Exit 0 when the hub answers its status RPC within the deadline and, with `--node`, this host's
node agent is registered with it, alive, and answers a call of its own; else exit 1 with one
line saying why. The node is asked directly as well as through the hub: the hub keeps a node
alive while its lease stream is open, which a wedged (stopped, deadlocked) agent still holds.

This module is imported by the parser for `add_parser`, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actorhub.cli.common import Target
    from actorhub.config import RpcDeadlines
    from actorhub.exceptions import RpcFailedError
    from actorhub.wire.records import NodeStatus
    from actorhub.wire.transport import ChannelPool

# Above what a hub or node agent takes to answer on a loaded machine, below a probe's
# timeoutSeconds (10 in deploy/k8s) with the interpreter's start-up added.
DEFAULT_TIMEOUT_S = 3.0
# The least deadline a second call gets when the first one used up nearly all of the budget.
_MIN_CALL_S = 0.05


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = commands.add_parser(
        "health-check", help="exit 0 when the hub (and with --node, this host's node agent) answers; for probes"
    )
    health.add_argument(
        "--address", metavar="HOST:PORT",
        help="the hub (default: the latest running cluster on this machine); token from ACTORHUB_TOKEN "
             "or the local session",
    )
    health.add_argument("--node", action="store_true",
                        help="also require this host's node agent to be registered, alive and answering")
    health.add_argument(
        "--node-ip-address", metavar="IP", default=None,
        help="this host's address, to find its node (default: $ACTORHUB_NODE_IP_ADDRESS, else the "
             "address this host reaches the hub from)",
    )
    health.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long the whole check may take (default: {DEFAULT_TIMEOUT_S:g})")


def health_check_command(address: str | None, node: bool, timeout: float, node_ip_address: str | None) -> int:
    from actorhub.cli.common import CliError, HubClient, find_cluster
    from actorhub.config import Config
    from actorhub.exceptions import RpcFailedError
    from actorhub.wire.hub import HubClient as WireHubClient

    if not timeout > 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    deadline = time.monotonic() + timeout
    config = Config.load(node_ip_address=node_ip_address)
    target = find_cluster(config, address)
    # The CLI's client only for its channels (the token); the deadlines are the probe's own, and
    # a hub that is away is not waited for: the probe's period is the retry.
    with HubClient(target) as cli:
        hub = WireHubClient(cli.channels, target.address, _deadlines(deadline), reconnect_s=0.0)
        try:
            status = hub.cluster_status()
        except RpcFailedError as err:
            raise CliError(_unhealthy(f"the hub at {target.address}", err, timeout, target)) from None
        alive = [n for n in status.nodes if n.alive]
        summary = f"the hub at {target.address} answers ({len(alive)} of {len(status.nodes)} nodes alive)"
        if not node:
            print(f"healthy: {summary}")
            return 0
        ours = _this_hosts_nodes(config.node_ip_address, target.address, alive)
        mine = _answering_node(ours, cli.channels, deadline, timeout, target)
    print(f"healthy: {summary}; node {mine.node_id} at {mine.address} answers")
    return 0


def _deadlines(deadline: float) -> RpcDeadlines:
    from actorhub.config import RpcDeadlines

    left = max(deadline - time.monotonic(), _MIN_CALL_S)
    return RpcDeadlines(control_s=left, ping_s=left, unavailable_retry_s=0.0)


def _this_hosts_nodes(node_ip: str | None, hub_address: str, alive: list[NodeStatus]) -> list[NodeStatus]:
    from actorhub.cli.common import CliError

    addresses = {node_ip} if node_ip else _route_addresses(hub_address)
    ours = [n for n in alive if _host(n.address) in addresses]
    if not ours:
        known = ", ".join(f"{n.node_id} at {n.address}" for n in alive) or "none"
        where = " or ".join(sorted(addresses)) or "this host"
        raise CliError(f"unhealthy: no alive node at {where} is registered with the hub at {hub_address} "
                       f"(alive nodes: {known})")
    return ours


def _answering_node(
    ours: list[NodeStatus], channels: ChannelPool, deadline: float, timeout: float, target: Target
) -> NodeStatus:
    """The first of this host's nodes that answers GetNodeInfo as itself."""
    from actorhub.cli.common import CliError
    from actorhub.exceptions import RpcFailedError
    from actorhub.wire.node import NodeClient

    reasons = []
    for candidate in ours:
        client = NodeClient(channels, candidate.address, _deadlines(deadline))
        try:
            info = client.info(client.deadlines.ping_s)
        except RpcFailedError as err:
            reasons.append(_unhealthy(f"node {candidate.node_id} at {candidate.address}", err, timeout, target))
            continue
        if info.node_id == candidate.node_id:
            return candidate
        reasons.append(f"{candidate.address} is node {info.node_id}, not {candidate.node_id} (the hub's record)")
    raise CliError("; ".join(reasons))


def _unhealthy(who: str, err: RpcFailedError, timeout: float, target: Target) -> str:
    code = err.code.name if err.code is not None else "UNKNOWN"
    if code == "DEADLINE_EXCEEDED":
        return f"unhealthy: {who} did not answer within {timeout:g} s"
    if code == "UNAVAILABLE":
        return f"unhealthy: {who} cannot be reached ({err.details})"
    if code == "UNAUTHENTICATED":
        if target.token_source:
            source = f"the token from {target.token_source}"
        else:
            source = f"the token of session {target.session.path}" if target.session is not None else "the token"
        return f"unhealthy: {who} refused {source}"
    return f"unhealthy: {who} failed: {code}: {err.details}"


def _route_addresses(hub_address: str) -> set[str]:
    """The addresses this host reaches the hub from: what a node agent advertises by default.

    A connected UDP socket sends nothing; connecting it only asks the kernel for the route.
    """
    host, _, port = hub_address.rpartition(":")
    found: set[str] = set()
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_DGRAM)
    except (OSError, ValueError):
        return found
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.connect(sockaddr)
                found.add(str(probe.getsockname()[0]))
        except OSError:
            continue
    return found


def _host(address: str) -> str:
    """The host of HOST:PORT as an IP; a node that advertises a name is resolved."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0])
    except (OSError, IndexError):
        return host
