"""The hub's autoscaler RPCs, for submitters (their task backlog), `request_resources()` and the
autoscaler process (`actorhub/autoscaler/`), with the plain records they exchange.

Resource vectors name CPUs "CPU" here, beside "GPU", "memory" and custom names, as Ray's
autoscaler does: the autoscaler packs whole vectors and needs no special case for CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.wire.rpc import Client, Peer, unary
from actorhub.wire.transport import ChannelPool


@dataclass(frozen=True)
class Demand:
    """`count` requests of one resource vector."""

    resources: Mapping[str, float]
    count: int = 1


@dataclass(frozen=True)
class NodeLoad:
    """An alive node: its vectors in all and free (what neither actors hold nor desks lent)."""

    node_id: str
    address: str
    total: Mapping[str, float]
    available: Mapping[str, float]
    actors: int = 0
    """Actors placed there, actorhub's own left out."""
    lent_cpus: float = 0.0


@dataclass(frozen=True)
class GroupDemand:
    """A placement group waiting for room: all its bundles or none, under its strategy."""

    bundles: tuple[Mapping[str, float], ...]
    strategy: str = "PACK"


@dataclass(frozen=True)
class AutoscalerView:
    nodes: tuple[NodeLoad, ...] = ()
    task_demand: tuple[Demand, ...] = ()
    actor_demand: tuple[Demand, ...] = ()
    requested: tuple[Demand, ...] = ()
    placement_groups: tuple[GroupDemand, ...] = field(default=())


def _shapes(demands: Iterable[Demand]) -> list[hub_pb2.AutoscalerShape]:
    return [hub_pb2.AutoscalerShape(resources=dict(d.resources), count=d.count) for d in demands]


def _demands(shapes: Iterable[hub_pb2.AutoscalerShape]) -> tuple[Demand, ...]:
    return tuple(Demand(dict(s.resources), s.count) for s in shapes)


class AutoscalerHubClient(Client[hub_pb2_grpc.HubStub]):
    """Each call is answered from the hub's memory (control deadline). Reports and requests are
    absolute (they replace the last one), so repeating one is harmless."""

    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        super().__init__(channels, Peer("hub", address), deadlines, hub_pb2_grpc.HubStub)

    def report_demand(self, reporter: str, demands: Iterable[Demand]) -> None:
        request = hub_pb2.AutoscalerDemandReport(reporter=reporter, shapes=_shapes(demands))
        unary(self.peer, "AutoscalerReportDemand", self._stub().AutoscalerReportDemand, request,
              self.deadlines.control_s, retry_unavailable_s=self._retry_s)

    def request_resources(self, bundles: Iterable[Demand]) -> None:
        request = hub_pb2.AutoscalerResourceRequest(bundles=_shapes(bundles))
        unary(self.peer, "AutoscalerRequestResources", self._stub().AutoscalerRequestResources, request,
              self.deadlines.control_s, retry_unavailable_s=self._retry_s)

    def state(self) -> AutoscalerView:
        reply: hub_pb2.AutoscalerState = unary(
            self.peer, "AutoscalerGetState", self._stub().AutoscalerGetState, common_pb2.Empty(),
            self.deadlines.control_s, retry_unavailable_s=self._retry_s)
        return AutoscalerView(
            nodes=tuple(NodeLoad(n.node_id, n.address, dict(n.total), dict(n.available), n.actors, n.lent_cpus)
                        for n in reply.nodes),
            task_demand=_demands(reply.task_demand),
            actor_demand=_demands(reply.actor_demand),
            requested=_demands(reply.requested),
            placement_groups=tuple(GroupDemand(tuple(dict(b.resources) for b in g.bundles for _ in range(b.count)),
                                               g.strategy) for g in reply.placement_groups),
        )
