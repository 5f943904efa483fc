"""The event loop that carries this process's call streams to actors.

Every process already runs an asyncio gRPC server on a loop of its own (`server.ServerLoop`).
Its outgoing call streams run there too, on asyncio channels used only on that loop: a batch
is written by the loop as soon as a caller rings, and replies are read and completed there.
With gRPC's sync streams each message crossed two more threads on the caller's side (gRPC's
request-iterator thread on the way out, and its channel-spin thread handing replies to a
reader thread on the way back); every crossing is a wake-up and a GIL hand-over, the largest
part of a small sync call's cost.

The process's long-lived server streams (a driver's job lease and log subscription) run on
the loop too (`LoopServerStream`): one sync stream in flight keeps gRPC's channel-spin thread
polling, and that thread then takes its share of every call stream's socket events as well,
about 40 µs of CPU per small sync call on the 2-CPU machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc

from actorhub.wire.rpc import Peer, ServerStream, Status, rpc_error
from actorhub.wire.server import ServerLoop
from actorhub.wire.transport import AsyncChannelPool, AsyncTokenChannel

T = TypeVar("T")
R = TypeVar("R")

# How often a reader blocked on a stream checks that the loop still runs it (a loop stopped
# at exit drops its coroutines without letting them say so).
_READER_CHECK_S = 1.0
_END = object()


class StreamLoop:
    def __init__(self, loop: ServerLoop, channels: AsyncChannelPool) -> None:
        self._loop = loop
        self._channels = channels  # used only on the loop

    def channel(self, address: str) -> AsyncTokenChannel:
        """On the loop only: the asyncio channel to `address`."""
        return self._channels.get(address)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return self._loop.submit(coro)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._loop.call_soon(fn, *args)

    def discard(self, address: str) -> None:
        """Close the channel to `address` (its streams are over), from any thread."""
        self._loop.submit(self._channels.discard(address))

    def close(self, timeout: float = 2.0) -> None:
        """Close every channel; call before the loop stops."""
        try:
            self._loop.submit(self._channels.close()).result(timeout)
        except Exception:  # a loop already stopped, or stuck: the process is leaving anyway
            pass


class LoopServerStream(ServerStream[R]):
    """A server-streaming call run on the stream loop, read by a blocking thread as a
    `ServerStream` is: iterate for its messages; a failure, or `cancel()`, raises RpcFailedError.

    `open_call` runs on the loop and makes the call on the channel it is given."""

    def __init__(
        self, streams: StreamLoop, peer: Peer, operation: str, open_call: Callable[[AsyncTokenChannel], Any]
    ) -> None:
        super().__init__(peer, operation, None, None)
        self._streams = streams
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancelled = False
        self._running = streams.submit(self._pump(open_call))

    async def _pump(self, open_call: Callable[[AsyncTokenChannel], Any]) -> None:
        status: Status | None = None
        try:
            if self._cancelled:
                raise asyncio.CancelledError
            self._call = open_call(self._streams.channel(self._peer.address))
            async for message in self._call:
                self._items.put(message)
        except asyncio.CancelledError:
            status = Status(grpc.StatusCode.CANCELLED, "cancelled by this process")
        except grpc.RpcError as err:
            code, details = (err.code(), err.details()) if isinstance(err, grpc.aio.AioRpcError) else (None, str(err))
            status = Status(code or grpc.StatusCode.UNKNOWN, details or "")
        self._items.put(_END if status is None else rpc_error(self._peer, self._operation, status, None))

    def _next(self) -> R | None:
        while True:
            try:
                item = self._items.get(timeout=_READER_CHECK_S)
                break
            except queue.Empty:
                if self._running.done() and self._items.empty():
                    item = rpc_error(self._peer, self._operation,
                                     Status(grpc.StatusCode.CANCELLED, "the process's stream loop stopped"), None)
                    break
        if item is _END:
            self._items.put(_END)  # a reader that asks again ends again
            return None
        if isinstance(item, Exception):
            self._items.put(item)
            raise item
        message: R = item
        return message

    def cancel(self) -> None:
        self._cancelled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call went with it
            self._streams.call_soon(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self._call is not None:
            self._call.cancel()
