"""What every RPC client shares: who the peer is, deadlines, retries, and status codes mapped to
actorhub's exceptions.

A client method calls `unary(...)` (or wraps a stream in `ServerStream`) and gets the reply or
an `RpcFailedError` naming the peer and the operation; it maps codes with a per-method meaning
(NOT_FOUND, ALREADY_EXISTS...) itself. gRPC's exception never leaves this module, and is never
kept in a frame: a failed call's exception holds its traceback, whose frames hold the caller's
ObjectRefs (see transport._TokenCall), so only its code and details are carried on.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from actorhub.config import RpcDeadlines
from actorhub.exceptions import (
    MessageTooLargeError,
    PeerUnavailableError,
    RpcDeadlineExceededError,
    RpcFailedError,
)
from actorhub.wire.transport import AsyncChannelPool, AsyncTokenChannel, ChannelPool

R = TypeVar("R")
S = TypeVar("S")

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
# gRPC's words for a message over the limit, at the sender or at the receiver.
_TOO_LARGE = re.compile(r"(?:Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")
# Answers that mean the peer is gone: nothing listens, or nothing answered in time.
GONE_CODES = (UNAVAILABLE, DEADLINE_EXCEEDED)

_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 0.5


@dataclass(frozen=True)
class Peer:
    """A process at the other end of a call: its role in the cluster and its address."""

    role: str
    address: str

    def __str__(self) -> str:
        return f"the {self.role} at {self.address}"


@dataclass(frozen=True)
class Status:
    """What is kept of a failed call: its code and details, never the exception itself."""

    code: grpc.StatusCode
    details: str


def status_of(err: grpc.RpcError) -> Status:
    if isinstance(err, grpc.Call):
        return Status(err.code(), err.details() or "")
    return Status(grpc.StatusCode.UNKNOWN, str(err))


def rpc_error(peer: Peer, operation: str, status: Status, timeout: float | None) -> RpcFailedError:
    """The exception for a failed call: a precise class for the peer being away or slow."""
    fields: dict[str, Any] = {"peer": str(peer), "operation": operation, "code": status.code, "details": status.details}
    if status.code == DEADLINE_EXCEEDED:
        within = f" within {timeout:.1f} s" if timeout is not None else ""
        return RpcDeadlineExceededError(f"{operation} to {peer} got no answer{within}", **fields)
    if status.code == UNAVAILABLE:
        return PeerUnavailableError(f"{operation} to {peer} failed: unreachable ({status.details})", **fields)
    if status.code == RESOURCE_EXHAUSTED and (too_large := too_large_message(status.details)):
        return MessageTooLargeError(f"{operation} to {peer} failed: {too_large}", **fields)
    return RpcFailedError(f"{operation} to {peer} failed: {status.code.name}: {status.details}", **fields)


def too_large_message(details: str) -> str:
    """A clear sentence for gRPC's message-size refusal, or "" when `details` is something else."""
    match = _TOO_LARGE.search(details)
    if match is None:
        return ""
    size, limit = match.groups()
    return _over_limit("a message", int(size), int(limit))


def _over_limit(what: str, size: int, limit: int) -> str:
    return (
        f"{what} of {size:,} bytes is over the message limit of {limit:,} bytes "
        "(Config.max_message_bytes, ACTORHUB_MAX_MESSAGE_BYTES); pass a value that large "
        "as an object (put) instead"
    )


# Room left in a message for what travels beside a call's arguments or a result's value.
MESSAGE_ENVELOPE_BYTES = 64 * 1024


def check_message_size(what: str, size: int, max_message_bytes: int) -> None:
    """Refuse, before sending, a payload that cannot fit in one message: gRPC would fail the
    whole stream it travels on, taking other calls with it."""
    if size + MESSAGE_ENVELOPE_BYTES > max_message_bytes:
        raise MessageTooLargeError(_over_limit(what, size, max_message_bytes - MESSAGE_ENVELOPE_BYTES))


def _attempt(method: Callable[..., Any], request: Any, timeout: float, wait_for_ready: bool | None) -> Any:
    """The reply, or the Status of the failure (an RpcError would pin this frame's callers)."""
    try:
        return method(request, timeout=timeout, wait_for_ready=wait_for_ready)
    except grpc.RpcError as err:
        return status_of(err)


def unary(
    peer: Peer,
    operation: str,
    method: Callable[..., R],
    request: Any,
    timeout: float,
    *,
    retry_unavailable_s: float = 0.0,
    wait_for_ready: bool | None = None,
) -> R:
    """Call `method` with a deadline of `timeout` seconds in all.

    `retry_unavailable_s` > 0 (idempotent calls only): an UNAVAILABLE answer is retried with a
    short backoff for that long, within the overall deadline, so a reconnecting channel or a
    peer restarting on its address is ridden out; a dead peer is still reported soon after.
    """
    start = time.monotonic()
    deadline = start + timeout
    retry_until = start + min(retry_unavailable_s, timeout)
    backoff = _FIRST_BACKOFF_S
    while True:
        result = _attempt(method, request, max(0.001, deadline - time.monotonic()), wait_for_ready)
        if not isinstance(result, Status):
            reply: R = result
            return reply
        now = time.monotonic()
        if result.code != UNAVAILABLE or now + backoff >= retry_until:
            raise rpc_error(peer, operation, result, timeout) from None
        time.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


async def async_unary(
    peer: Peer,
    operation: str,
    method: Callable[..., Awaitable[R]],
    request: Any,
    timeout: float,
    *,
    retry_unavailable_s: float = 0.0,
    wait_for_ready: bool | None = None,
) -> R:
    """`unary` for asyncio stubs: the same deadline, retries and errors, awaited on the loop."""
    start = time.monotonic()
    deadline = start + timeout
    retry_until = start + min(retry_unavailable_s, timeout)
    backoff = _FIRST_BACKOFF_S
    while True:
        status: Status | None = None
        try:
            reply: R = await method(
                request, timeout=max(0.001, deadline - time.monotonic()), wait_for_ready=wait_for_ready
            )
            return reply
        except grpc.RpcError as err:
            status = status_of(err)
        now = time.monotonic()
        if status.code != UNAVAILABLE or now + backoff >= retry_until:
            raise rpc_error(peer, operation, status, timeout) from None
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


class ServerStream(Generic[R]):
    """A server-streaming call: iterate for its messages; failures raise RpcFailedError."""

    def __init__(self, peer: Peer, operation: str, call: Any, timeout: float | None) -> None:
        self._peer = peer
        self._operation = operation
        self._call = call
        self._timeout = timeout

    def __iter__(self) -> Iterator[R]:
        while True:
            message = self._next()
            if message is None:
                return
            yield message

    def _next(self) -> R | None:
        try:
            message: R = next(self._call)
            return message
        except StopIteration:
            return None
        except grpc.RpcError as err:
            status = status_of(err)
        raise rpc_error(self._peer, self._operation, status, self._timeout) from None

    def cancel(self) -> None:
        self._call.cancel()


class PooledStub(Generic[S]):
    """A peer's stub on the process's pooled channel to it.

    Remade when the pool replaced the channel (after `ChannelPool.discard`), so a client
    kept across a peer's restart never calls through a closed channel.
    """

    __slots__ = ("_channel", "_channels", "_make", "_stub", "peer")

    def __init__(self, channels: ChannelPool, peer: Peer, make_stub: Callable[[grpc.Channel], S]) -> None:
        self._channels = channels
        self._make = make_stub
        self._channel: grpc.Channel | None = None
        self._stub: S | None = None
        self.peer = peer

    def stub(self) -> S:
        channel = self._channels.get(self.peer.address)
        stub = self._stub
        if stub is None or channel is not self._channel:
            stub = self._stub = self._make(channel)
            self._channel = channel
        return stub


class Client(Generic[S]):
    """What every client of a peer holds: the peer's stub on the process's pooled channel, and
    the deadlines its calls get (from the configuration, passed in by the process's edge)."""

    def __init__(
        self, channels: ChannelPool, peer: Peer, deadlines: RpcDeadlines, make_stub: Callable[[grpc.Channel], S]
    ) -> None:
        self.address = peer.address
        self.deadlines = deadlines
        self._pooled = PooledStub(channels, peer, make_stub)

    @property
    def peer(self) -> Peer:
        return self._pooled.peer

    def _stub(self) -> S:
        return self._pooled.stub()

    @property
    def _retry_s(self) -> float:
        """How long idempotent calls ride out an UNAVAILABLE peer."""
        return self.deadlines.unavailable_retry_s


class AsyncClient(Generic[S]):
    """`Client` for asyncio callers: stubs on the loop's own channel pool, used only on that loop."""

    def __init__(
        self,
        channels: AsyncChannelPool,
        peer: Peer,
        deadlines: RpcDeadlines,
        make_stub: Callable[[AsyncTokenChannel], S],
    ) -> None:
        self.address = peer.address
        self.deadlines = deadlines
        self.peer = peer
        self._channels = channels
        self._make = make_stub
        self._channel: AsyncTokenChannel | None = None
        self._stub_made: S | None = None

    def _stub(self) -> S:
        channel = self._channels.get(self.peer.address)
        stub = self._stub_made
        if stub is None or channel is not self._channel:
            stub = self._stub_made = self._make(channel)
            self._channel = channel
        return stub

    @property
    def _retry_s(self) -> float:
        return self.deadlines.unavailable_retry_s
