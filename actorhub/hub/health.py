"""The hub's health check of node agents: each node's last heartbeat, as `actorhub status` shows.

Every `HEARTBEAT_S` the hub asks each alive node for its info (GetNodeInfo, within the ping
deadline), as Ray's control plane health-checks its raylets; the time of a node's last answer
(or of its registration) is its heartbeat. Whether a node is alive stays the business of its
lease stream: a broken stream is a dead node. The heartbeat is what shows a node that holds its
lease but no longer answers (stopped, or cut off without its connection breaking).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from actorhub._proto.v1 import hub_pb2
from actorhub.exceptions import RpcFailedError
from actorhub.wire.node import AsyncNodeClient

HEARTBEAT_S = 1.0


class NodeHealth:
    """Runs on the hub's loop; `alive_nodes` lists (node id, address) of the nodes to check."""

    def __init__(
        self,
        alive_nodes: Callable[[], list[tuple[str, str]]],
        client: Callable[[str], AsyncNodeClient],
        timeout_s: float,
    ) -> None:
        self._alive_nodes = alive_nodes
        self._client = client
        self._timeout_s = timeout_s
        self._last: dict[str, float] = {}

    def beat(self, node_id: str) -> None:
        """A sign of life other than the check (the node registered)."""
        self._last[node_id] = time.time()

    async def run(self) -> None:
        """Check every alive node, forever (cancelled with the hub's other tasks)."""
        while True:
            started = time.monotonic()
            await asyncio.gather(*(self._check(node_id, address) for node_id, address in self._alive_nodes()))
            await asyncio.sleep(max(0.0, HEARTBEAT_S - (time.monotonic() - started)))

    async def _check(self, node_id: str, address: str) -> None:
        try:
            answered = await self._client(address).ping(self._timeout_s)
        except RpcFailedError:
            return  # no heartbeat this round: the status shows its age grow
        if answered == node_id:  # not another node that took over a dead one's port
            self._last[node_id] = time.time()

    def stamp(self, status: hub_pb2.ClusterStatus) -> None:
        for node in status.nodes:
            node.last_heartbeat = self._last.get(node.node_id, 0.0)
