"""The clients of a node agent's control RPCs: workers register (`NodeClient`, sync), the hub
starts and kills actors and stops nodes (`AsyncNodeClient`, on the hub's event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import grpc

from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.wire.records import NodeStatus
from actorhub.wire.rpc import AsyncClient, Client, Peer, async_unary, unary
from actorhub.wire.transport import AsyncChannelPool, AsyncTokenChannel, ChannelPool

if TYPE_CHECKING:
    from actorhub._proto.v1.node_pb2_grpc import NodeAsyncStub


class NodeClient(Client[node_pb2_grpc.NodeStub]):
    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        super().__init__(channels, Peer("node", address), deadlines, node_pb2_grpc.NodeStub)

    def register_worker(self, worker_id: str, address: str, pid: int, timeout: float) -> None:
        request = node_pb2.RegisterWorkerRequest(worker_id=worker_id, address=address, pid=pid)
        unary(self.peer, "RegisterWorker", self._stub().RegisterWorker, request, timeout)

    def start_actor(self, spec: common_pb2.ActorSpec, incarnation: int) -> node_pb2.NodeStartActorReply:
        """Runs the actor's constructor on the node: bounded by actor_start_s, not retried (a
        second start would run a second constructor)."""
        request = node_pb2.NodeStartActorRequest(spec=spec, incarnation=incarnation)
        reply: node_pb2.NodeStartActorReply = unary(
            self.peer, "StartActor", self._stub().StartActor, request, self.deadlines.actor_start_s
        )
        return reply

    def kill_worker(self, actor_id: str, incarnation: int, timeout: float) -> None:
        """Returns once the node reaped the worker; the caller bounds that wait."""
        request = node_pb2.KillWorkerRequest(actor_id=actor_id, incarnation=incarnation)
        unary(self.peer, "KillWorker", self._stub().KillWorker, request, timeout)

    def shutdown(self, timeout: float) -> None:
        unary(self.peer, "Shutdown", self._stub().Shutdown, common_pb2.Empty(), timeout)

    def info(self, timeout: float) -> NodeStatus:
        """The agent's own view of itself (`actorhub health-check --node` asks it directly)."""
        reply: node_pb2.NodeInfo = unary(
            self.peer, "GetNodeInfo", self._stub().GetNodeInfo, common_pb2.Empty(), timeout
        )
        return NodeStatus(node_id=reply.node_id, address=reply.address, num_cpus=reply.num_cpus,
                          available_cpus=reply.available_cpus, alive=True, pid=reply.pid)


def _async_stub(channel: AsyncTokenChannel) -> NodeAsyncStub:
    # The generated stub only calls the channel's multi-callable factories, which the token
    # channel provides; typed as the asyncio channel it stands in for.
    return node_pb2_grpc.NodeStub(cast(grpc.aio.Channel, channel))


class AsyncNodeClient(AsyncClient["NodeAsyncStub"]):
    """NodeClient's calls from the hub, awaited on its loop: a call in flight (a constructor
    running inside StartActor) holds no thread. Use it only on the loop of its channel pool."""

    def __init__(self, channels: AsyncChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        super().__init__(channels, Peer("node", address), deadlines, _async_stub)

    async def start_actor(
        self, spec: common_pb2.ActorSpec, incarnation: int, gpu_ids: Sequence[int] = (),
    ) -> node_pb2.NodeStartActorReply:
        """Runs the actor's constructor on the node: bounded by actor_start_s, not retried (a
        second start would run a second constructor)."""
        request = node_pb2.NodeStartActorRequest(spec=spec, incarnation=incarnation, gpu_ids=gpu_ids)
        reply: node_pb2.NodeStartActorReply = await async_unary(
            self.peer, "StartActor", self._stub().StartActor, request, self.deadlines.actor_start_s
        )
        return reply

    async def kill_worker(self, actor_id: str, incarnation: int, timeout: float) -> None:
        """Returns once the node reaped the worker; the caller bounds that wait."""
        request = node_pb2.KillWorkerRequest(actor_id=actor_id, incarnation=incarnation)
        await async_unary(self.peer, "KillWorker", self._stub().KillWorker, request, timeout)

    async def ping(self, timeout: float) -> str:
        """The node's id, as it answers GetNodeInfo: the hub's health check."""
        reply: node_pb2.NodeInfo = await async_unary(
            self.peer, "GetNodeInfo", self._stub().GetNodeInfo, common_pb2.Empty(), timeout
        )
        return reply.node_id

    async def shutdown(self, timeout: float) -> None:
        await async_unary(self.peer, "Shutdown", self._stub().Shutdown, common_pb2.Empty(), timeout)
