"""The client of a process's Worker service (every driver and worker serves one): objects it
owns, borrower bookkeeping, liveness, and starting an actor in a fresh worker.

Actor calls do not come through here: they travel on call streams (wire/call_stream.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import ActorUnavailableError, RpcFailedError
from actorhub.wire.errors import RemoteError, from_error_info
from actorhub.wire.records import OwnedObject
from actorhub.wire.rpc import GONE_CODES, UNAVAILABLE, AsyncClient, Client, Peer, async_unary, unary
from actorhub.wire.transport import AsyncChannelPool, AsyncTokenChannel, ChannelPool


class LentRef(NamedTuple):
    """A ref inside a value sent to another process (a call's result, a GetObject reply): its
    owner registered the receiver as a borrower already. A tuple: `lend` makes one per ref of
    every result that holds refs."""

    object_id: str
    owner_address: str
    value_index: int  # which of the message's values holds it


def lent_refs(contained: Iterable[worker_pb2.ContainedRef]) -> list[LentRef]:
    """A reply's ContainedRef messages as LentRefs (called only for replies that carry some)."""
    return [LentRef(c.object_id, c.owner_address, c.value_index) for c in contained]


def add_contained(out: Iterable[LentRef], into: worker_pb2.Reply | worker_pb2.GetObjectReply) -> None:
    """Write LentRefs into a reply's `contained` field (the servers' side of `lent_refs`)."""
    add = into.contained.add
    for object_id, owner_address, value_index in out:
        add(object_id=object_id, owner_address=owner_address, value_index=value_index)


@dataclass(frozen=True, slots=True)
class ObjectReply:
    """What an owner said about one of its objects (GetObject)."""

    ready: bool = False
    missing: bool = False  # the owner does not have (or no longer has) it
    value: bytes = b""
    error: RemoteError | None = None  # the object is an error (re-raised at get)
    contained: list[LentRef] | None = None  # refs inside the value, lent to the reader
    store_object_id: str = ""  # set instead of value: the object is in a node's store
    store_node_address: str = ""  # that node's agent

    @classmethod
    def of(cls, reply: worker_pb2.GetObjectReply) -> ObjectReply:
        return cls(
            ready=reply.ready, missing=reply.missing, value=reply.value,
            error=from_error_info(reply.error) if reply.HasField("error") else None,
            contained=lent_refs(reply.contained) if reply.contained else None,
            store_object_id=reply.store_object_id, store_node_address=reply.store_node_address,
        )


class WorkerClient(Client[worker_pb2_grpc.WorkerStub]):
    """One process's Worker service; `role` names it in errors ("owner", "worker", "reader")."""

    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines, role: str = "worker") -> None:
        super().__init__(channels, Peer(role, address), deadlines, worker_pb2_grpc.WorkerStub)

    # -- objects the peer owns ------------------------------------------------------------------
    def get_object(
        self, object_id: str, wait_s: float, reader_node_id: str, reader_address: str
    ) -> ObjectReply:
        """A long poll of `wait_s` (the owner answers "not ready" after it). Not retried: an
        owner that refuses connections is dead, and its objects with it."""
        request = worker_pb2.GetObjectRequest(
            object_id=object_id, timeout_s=wait_s, reader_node_id=reader_node_id, reader_address=reader_address
        )
        reply: worker_pb2.GetObjectReply = unary(
            self.peer, "GetObject", self._stub().GetObject, request,
            wait_s + self.deadlines.long_poll_margin_s,
        )
        return ObjectReply.of(reply)

    def add_borrowers(self, borrower: str, object_ids: list[str]) -> None:
        request = worker_pb2.BorrowRequest(borrower=borrower, object_ids=object_ids)
        unary(self.peer, "AddBorrowers", self._stub().AddBorrowers, request, self.deadlines.owner_s)

    def remove_borrowers(self, borrower: str, object_ids: list[str], counts: list[int]) -> None:
        """Not retried: a count given back twice would free objects still borrowed."""
        request = worker_pb2.BorrowRequest(borrower=borrower, object_ids=object_ids, counts=counts)
        unary(self.peer, "RemoveBorrowers", self._stub().RemoveBorrowers, request, self.deadlines.owner_s)

    def list_owned_objects(self) -> list[OwnedObject]:
        reply: worker_pb2.OwnedObjects = unary(
            self.peer, "ListOwnedObjects", self._stub().ListOwnedObjects, common_pb2.Empty(),
            self.deadlines.owner_s,
        )
        return [
            OwnedObject(
                object_id=o.object_id, size=o.size, where=o.where, local_refs=o.local_refs,
                borrowers=dict(o.borrowers), escaped=o.escaped, contained_in=o.contained_in, store_id=o.store_id,
            )
            for o in reply.objects
        ]

    def held_store_ids(self, store_ids: list[str]) -> set[str]:
        """Which of `store_ids` the owner still holds (results whose writer died)."""
        reply: worker_pb2.StoreIds = unary(
            self.peer, "HeldStoreIds", self._stub().HeldStoreIds,
            worker_pb2.StoreIds(store_ids=store_ids), self.deadlines.owner_s,
        )
        return set(reply.store_ids)

    def cancel_call(self, object_id: str, force: bool, recursive: bool) -> str:
        """cancel() of a call or task this owner made: "" when done, else why it refused."""
        request = worker_pb2.CancelCallRequest(object_id=object_id, force=force, recursive=recursive)
        reply: worker_pb2.CancelCallReply = unary(
            self.peer, "CancelCall", self._stub().CancelCall, request, self.deadlines.owner_s
        )
        return reply.refused

    # -- starting an actor ----------------------------------------------------------------------
    def start_actor(self, spec: common_pb2.ActorSpec, incarnation: int, node_id: str) -> worker_pb2.StartActorReply:
        """Runs the constructor in the worker (bounded by actor_start_s). A worker that cannot
        be reached or does not answer raises ActorUnavailableError."""
        request = worker_pb2.StartActorRequest(spec=spec, incarnation=incarnation, node_id=node_id)
        try:
            reply: worker_pb2.StartActorReply = unary(
                self.peer, "StartActor", self._stub().StartActor, request, self.deadlines.actor_start_s
            )
        except RpcFailedError as e:
            raise _start_error(e, spec) from None
        return reply

    # -- liveness -------------------------------------------------------------------------------
    def ping(self, timeout: float | None = None) -> grpc.StatusCode | None:
        """None if the peer answered, else the failure's code. Never retried: a ping's purpose
        is to tell whether the peer is there now."""
        try:
            unary(self.peer, "Ping", self._stub().Ping, common_pb2.Empty(), timeout or self.deadlines.ping_s)
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


def _start_error(error: RpcFailedError, spec: common_pb2.ActorSpec) -> Exception:
    """A failed StartActor's exception: a worker gone or silent is ActorUnavailableError."""
    if error.code in GONE_CODES:
        return ActorUnavailableError(str(error), actor_id=spec.actor_id, class_name=spec.class_name)
    return error


def _async_stub(channel: AsyncTokenChannel) -> worker_pb2_grpc.WorkerAsyncStub:
    # The token channel makes the same multi-callables as the asyncio channel it wraps.
    return worker_pb2_grpc.WorkerStub(cast(grpc.aio.Channel, channel))


class AsyncWorkerClient(AsyncClient["worker_pb2_grpc.WorkerAsyncStub"]):
    """`WorkerClient`'s calls for asyncio callers (the node agent's loop): the same deadlines
    and errors. Use it only on the loop that owns `channels`."""

    def __init__(
        self, channels: AsyncChannelPool, address: str, deadlines: RpcDeadlines, role: str = "worker"
    ) -> None:
        super().__init__(channels, Peer(role, address), deadlines, _async_stub)

    async def start_actor(
        self, spec: common_pb2.ActorSpec, incarnation: int, node_id: str, gpu_ids: Sequence[int] = (),
    ) -> worker_pb2.StartActorReply:
        """Runs the constructor in the worker (bounded by actor_start_s). A worker that cannot
        be reached or does not answer raises ActorUnavailableError."""
        request = worker_pb2.StartActorRequest(spec=spec, incarnation=incarnation, node_id=node_id, gpu_ids=gpu_ids)
        try:
            reply: worker_pb2.StartActorReply = await async_unary(
                self.peer, "StartActor", self._stub().StartActor, request, self.deadlines.actor_start_s
            )
        except RpcFailedError as e:
            raise _start_error(e, spec) from None
        return reply

    async def drain_actor(
        self, actor_id: str, incarnation: int, move: bool, reason: str, timeout_s: float,
    ) -> bool:
        """A node drain (worker/drain.py): True once no call of the actor runs in the worker any
        more and its streams ended as moved; False when a call was still running at `timeout_s`."""
        request = worker_pb2.DrainActorRequest(
            actor_id=actor_id, incarnation=incarnation, move=move, reason=reason, timeout_s=timeout_s)
        reply: worker_pb2.DrainActorReply = await async_unary(
            self.peer, "DrainActor", self._stub().DrainActor, request, timeout_s + self.deadlines.control_s)
        return reply.calls_ended
