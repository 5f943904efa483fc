"""The client of a process's Worker service (every driver and worker serves one): objects it
owns, borrower bookkeeping, liveness, and starting an actor in a fresh worker.

Actor calls do not come through here: they travel on call streams (wire/call_stream.py).
"""

from __future__ import annotations

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import ActorUnavailableError, RpcFailedError
from actorhub.wire.rpc import GONE_CODES, UNAVAILABLE, Endpoint, Peer, unary
from actorhub.wire.transport import ChannelPool


class WorkerClient:
    """One process's Worker service; `role` names it in errors ("owner", "worker", "reader")."""

    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines, role: str = "worker") -> None:
        self.address = address
        self.deadlines = deadlines
        self._worker = Endpoint(channels, Peer(role, address), worker_pb2_grpc.WorkerStub)

    @property
    def peer(self) -> Peer:
        return self._worker.peer

    # -- objects the peer owns ------------------------------------------------------------------
    def get_object(
        self, object_id: str, wait_s: float, reader_node_id: str, reader_address: str
    ) -> worker_pb2.GetObjectReply:
        """A long poll of `wait_s` (the owner answers "not ready" after it). Not retried: an
        owner that refuses connections is dead, and its objects with it."""
        request = worker_pb2.GetObjectRequest(
            object_id=object_id, timeout_s=wait_s, reader_node_id=reader_node_id, reader_address=reader_address
        )
        reply: worker_pb2.GetObjectReply = unary(
            self.peer, "GetObject", self._worker.stub().GetObject, request,
            wait_s + self.deadlines.long_poll_margin_s,
        )
        return reply

    def add_borrowers(self, borrower: str, object_ids: list[str]) -> None:
        request = worker_pb2.BorrowRequest(borrower=borrower, object_ids=object_ids)
        unary(self.peer, "AddBorrowers", self._worker.stub().AddBorrowers, request, self.deadlines.owner_s)

    def remove_borrowers(self, borrower: str, object_ids: list[str], counts: list[int]) -> None:
        """Not retried: a count given back twice would free objects still borrowed."""
        request = worker_pb2.BorrowRequest(borrower=borrower, object_ids=object_ids, counts=counts)
        unary(self.peer, "RemoveBorrowers", self._worker.stub().RemoveBorrowers, request, self.deadlines.owner_s)

    def list_owned_objects(self) -> worker_pb2.OwnedObjects:
        reply: worker_pb2.OwnedObjects = unary(
            self.peer, "ListOwnedObjects", self._worker.stub().ListOwnedObjects, common_pb2.Empty(),
            self.deadlines.owner_s,
        )
        return reply

    def held_store_ids(self, store_ids: list[str]) -> set[str]:
        """Which of `store_ids` the owner still holds (results whose writer died)."""
        reply: worker_pb2.StoreIds = unary(
            self.peer, "HeldStoreIds", self._worker.stub().HeldStoreIds,
            worker_pb2.StoreIds(store_ids=store_ids), self.deadlines.owner_s,
        )
        return set(reply.store_ids)

    # -- starting an actor ----------------------------------------------------------------------
    def start_actor(self, spec: common_pb2.ActorSpec, incarnation: int, node_id: str) -> worker_pb2.StartActorReply:
        """Runs the constructor in the worker (bounded by actor_start_s). A worker that cannot
        be reached or does not answer raises ActorUnavailableError."""
        request = worker_pb2.StartActorRequest(spec=spec, incarnation=incarnation, node_id=node_id)
        try:
            reply: worker_pb2.StartActorReply = unary(
                self.peer, "StartActor", self._worker.stub().StartActor, request, self.deadlines.actor_start_s
            )
        except RpcFailedError as e:
            if e.code in GONE_CODES:
                raise ActorUnavailableError(str(e), actor_id=spec.actor_id, class_name=spec.class_name) from None
            raise
        return reply

    # -- liveness -------------------------------------------------------------------------------
    def ping(self, timeout: float | None = None) -> grpc.StatusCode | None:
        """None if the peer answered, else the failure's code. Never retried: a ping's purpose
        is to tell whether the peer is there now."""
        try:
            unary(self.peer, "Ping", self._worker.stub().Ping, common_pb2.Empty(), timeout or self.deadlines.ping_s)
        except RpcFailedError as e:
            return e.code
        return None

    def is_gone(self, timeout: float | None = None) -> bool:
        """True when the peer cannot be reached; any other answer, even an error, means
        something is still there."""
        return self.ping(timeout) in GONE_CODES

    def refuses(self, timeout: float = 5.0) -> bool:
        """True only when nothing listens at the address any more.

        Stricter than is_gone: a peer too busy to answer in time still counts as there, for
        checks whose mistake would pull memory from under a live process.
        """
        return self.ping(timeout) is UNAVAILABLE
