"""The hub client's node drain call (hub/node_drain.py), mixed into `HubClient`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from actorhub._proto.v1 import hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import NodeDrainRefusedError, NodeNotFoundError, RpcFailedError
from actorhub.wire.rpc import NOT_FOUND

R = TypeVar("R")


@dataclass(frozen=True)
class DrainSummary:
    """What a drain did with the node's actors."""

    moved: int
    """Restarted on other nodes (their queued calls with them), no restart budget spent."""
    failed: int
    """Could not move (not restartable, or no room elsewhere): their queued calls failed with
    ActorUnavailableError, and those not restartable ended."""
    killed: int
    """Still running at the deadline: ended as on a node's death."""


class NodeDrainCalls:
    deadlines: RpcDeadlines

    if TYPE_CHECKING:
        def _call(self, operation: str, method: Callable[..., R], request: Any, timeout: float, *,
                  repeat: bool, wait_for_ready: bool | None = None) -> R: ...

        def _stub(self) -> hub_pb2_grpc.HubStub: ...

    def drain_node(self, node_id: str, deadline_s: float) -> DrainSummary:
        """Returns once the node is removed (at most about `deadline_s`; <= 0: the hub's default).
        Repeatable: a second request joins the drain under way. A node that is not alive raises
        NodeNotFoundError, the head node NodeDrainRefusedError."""
        request = hub_pb2.DrainNodeRequest(node_id=node_id, deadline_s=deadline_s)
        wait = (deadline_s if deadline_s > 0 else 30.0) + 2 * self.deadlines.control_s
        try:
            reply: hub_pb2.DrainNodeReply = self._call(
                "DrainNode", self._stub().DrainNode, request, wait, repeat=True)
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise NodeNotFoundError(e.details or f"node {node_id} is not alive") from None
            if e.code == grpc.StatusCode.FAILED_PRECONDITION:
                raise NodeDrainRefusedError(e.details or f"node {node_id} may not be drained") from None
            raise
        return DrainSummary(moved=reply.moved, failed=reply.failed, killed=reply.killed)
