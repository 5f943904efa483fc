"""gRPC channels: one reused channel per peer that sends the cluster token (servers that check
it are in server.py).

The token travels as call metadata and is checked once per RPC, so a long-lived call stream
pays for it once, not per actor call. With TLS configured (tls.py) a channel is opened secure
instead of plain; that is decided once, when it is opened, and the calls on it are the same.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from actorhub.config import DEFAULT_MAX_MESSAGE_BYTES
from actorhub.wire.tls import TlsCredentials

TOKEN_METADATA_KEY = "actorhub-token"
# The initial metadata a worker sends once it has taken a call stream, before running any of
# its calls: a stream that ends without it delivered nothing, so its calls may be sent again.
STREAM_TAKEN = ("actorhub-stream", "taken")
# The trailing metadata of a call stream a drain ended (worker/drain.py): the calls it carried
# that got no answer never ran, so they go to the actor's next incarnation with retries untouched.
STREAM_MOVED = ("actorhub-stream", "moved")



def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        # A message over the limit fails at its sender, before it is sent (RESOURCE_EXHAUSTED).
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        # Reconnect fast after a peer restarts on the same address.
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Despite its name, gRPC core reads this as the least time a connect attempt gets. It
        # was 50 ms here once: under load a handshake took longer, the channel failed, and a
        # stream to a live actor broke ("timed out before receiving SETTINGS frame"). gRPC's
        # default, 20 s.
        ("grpc.min_reconnect_backoff_ms", 20_000),
    ]


class _TokenCall:
    """A multi-callable of the plain channel, sending the token with each call.

    Used in place of grpc.intercept_channel: its unary path keeps a failed call's exception in
    a local of the frame that raises it, a cycle that pins every caller frame above (and the
    ObjectRefs in them, so their objects) until the cyclic GC runs. It also costs more per call.
    """

    __slots__ = ("_inner", "_token")

    def __init__(self, inner: Any, token: tuple[str, str]) -> None:
        self._inner = inner
        self._token = token

    def _metadata(self, metadata: Any) -> Any:
        return (*metadata, self._token) if metadata else (self._token,)

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner(request, timeout=timeout, metadata=self._metadata(metadata), **kwargs)

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner.with_call(request, timeout=timeout, metadata=self._metadata(metadata), **kwargs)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **kwargs: Any) -> Any:
        return self._inner.future(request, timeout=timeout, metadata=self._metadata(metadata), **kwargs)


class _TokenMethods:
    """The multi-callables of a wrapped channel (sync or asyncio), each sending the token."""

    _channel: Any
    _token: tuple[str, str]

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.unary_unary(method, *args, **kwargs), self._token)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.unary_stream(method, *args, **kwargs), self._token)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.stream_unary(method, *args, **kwargs), self._token)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.stream_stream(method, *args, **kwargs), self._token)


class _TokenChannel(_TokenMethods, grpc.Channel):
    """A channel whose every call carries the cluster token in its metadata."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._token = (TOKEN_METADATA_KEY, token)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> _TokenChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()


def open_channel(
    address: str, token: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, tls: TlsCredentials | None = None
) -> grpc.Channel:
    """A channel whose calls carry the token; with `tls`, mutual TLS to a server whose
    certificate verifies against the CA and names `address`'s host."""
    options = channel_options(max_message_bytes)
    if tls is None:
        return _TokenChannel(grpc.insecure_channel(address, options=options), token)
    return _TokenChannel(grpc.secure_channel(address, tls.channel_credentials(), options=options), token)


def open_async_channel(
    address: str, token: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, tls: TlsCredentials | None = None
) -> AsyncTokenChannel:
    """open_channel for asyncio callers; use the channel only on the loop it was made on."""
    options = channel_options(max_message_bytes)
    if tls is None:
        return AsyncTokenChannel(grpc.aio.insecure_channel(address, options=options), token)
    return AsyncTokenChannel(grpc.aio.secure_channel(address, tls.channel_credentials(), options=options), token)


class AsyncTokenChannel(_TokenMethods):
    """An asyncio channel whose every call carries the cluster token; generated stubs take it."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._token = (TOKEN_METADATA_KEY, token)

    async def close(self) -> None:
        await self._channel.close()


class ChannelPool:
    """One channel per peer address, reused by every stub in the process."""

    def __init__(
        self, token: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, tls: TlsCredentials | None = None
    ) -> None:
        self._token = token
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def get(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            with self._lock:
                channel = self._channels.get(address)
                if channel is None:
                    channel = open_channel(address, self._token, self.max_message_bytes, self.tls)
                    self._channels[address] = channel
        return channel

    def discard(self, address: str) -> None:
        with self._lock:
            channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def count(self) -> int:
        """How many channels are open (not __len__: an empty pool must still be truthy)."""
        return len(self._channels)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class AsyncChannelPool:
    """ChannelPool for asyncio callers: one channel per peer, used only on its loop."""

    def __init__(
        self, token: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, tls: TlsCredentials | None = None
    ) -> None:
        self._token = token
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self._channels: dict[str, AsyncTokenChannel] = {}

    def get(self, address: str) -> AsyncTokenChannel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_async_channel(
                address, self._token, self.max_message_bytes, self.tls
            )
        return channel

    async def discard(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
