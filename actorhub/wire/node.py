"""The client of a node agent's control RPCs: workers register, the hub starts and kills actors."""

from __future__ import annotations

from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.wire.rpc import Client, Peer, unary
from actorhub.wire.transport import ChannelPool


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
