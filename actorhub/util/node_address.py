"""get_node_ip_address(): the address other processes of the cluster reach this one's node at."""

from __future__ import annotations

from actorhub.cluster import addresses
from actorhub.config import Config
from actorhub.runtime import current as _current


def get_node_ip_address() -> str:
    """The IP address of this process's node, as the cluster knows it.

    Inside a cluster (a driver after init(), a task, an actor) it is the host this process's
    server advertises; before init() it is the address a node started here would advertise
    (ACTORHUB_NODE_IP_ADDRESS, else loopback for a local cluster).
    """
    runtime = _current.runtime_or_none()
    address = getattr(runtime, "address", "") if runtime is not None else ""
    if address:
        return addresses.parse_address(address, "this process's address")[0]
    return addresses.node_host(Config.load())
