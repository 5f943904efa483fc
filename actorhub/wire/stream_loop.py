"""The event loop that carries this process's call streams to actors.

Every process already runs an asyncio gRPC server on a loop of its own (`server.ServerLoop`).
Its outgoing call streams run there too, on asyncio channels used only on that loop: a batch
is written by the loop as soon as a caller rings, and replies are read and completed there.
With gRPC's sync streams each message crossed two more threads on the caller's side (gRPC's
request-iterator thread on the way out, and its channel-spin thread handing replies to a
reader thread on the way back); every crossing is a wake-up and a GIL hand-over, the largest
part of a small sync call's cost.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from actorhub.wire.server import ServerLoop
from actorhub.wire.transport import AsyncChannelPool, AsyncTokenChannel

T = TypeVar("T")


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
