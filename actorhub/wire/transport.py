"""gRPC plumbing shared by every process: servers that check the cluster token, and one
reused channel per peer that sends it.

The token travels as call metadata and is checked once per RPC, so a long-lived call stream
pays for it once, not per actor call.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

TOKEN_METADATA_KEY = "actorhub-token"
# The initial metadata a worker sends once it has taken a call stream, before running any of
# its calls: a stream that ends without it delivered nothing, so its calls may be sent again.
STREAM_TAKEN = ("actorhub-stream", "taken")

# Messages carry pickled values; gRPC's 4 MiB default would turn a large argument into an error.
_UNLIMITED = -1
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", _UNLIMITED),
    ("grpc.max_receive_message_length", _UNLIMITED),
    ("grpc.enable_retries", 0),
    # Reconnect fast after a peer restarts on the same address.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Despite its name, gRPC core reads this as the least time a connect attempt gets. It was
    # 50 ms here once: under load a handshake took longer, the channel failed, and a stream to
    # a live actor broke ("timed out before receiving SETTINGS frame"). gRPC's default, 20 s.
    ("grpc.min_reconnect_backoff_ms", 20_000),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", _UNLIMITED),
    ("grpc.max_receive_message_length", _UNLIMITED),
    # Two servers on one port would split calls between processes.
    ("grpc.so_reuseport", 0),
]


def _deny(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    def abort(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class TokenCheck(grpc.ServerInterceptor):
    """Rejects every RPC whose metadata lacks the cluster token (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        sent = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_METADATA_KEY:
                sent = value.encode() if isinstance(value, str) else value
                break
        if not sent:
            return _deny("missing cluster token")
        if not hmac.compare_digest(sent, self._token):
            return _deny("wrong cluster token")
        return continuation(handler_call_details)


def make_server(token: str, max_workers: int = 64) -> grpc.Server:
    """A sync gRPC server: measured faster than grpc.aio here for streams from sync callers."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="actorhub-rpc"),
        interceptors=[TokenCheck(token)],
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=None,
    )


def bind(server: grpc.Server, host: str, port: int = 0) -> str:
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return f"{host}:{bound}"


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


class _TokenChannel(grpc.Channel):
    """A channel whose every call carries the cluster token in its metadata."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._token = (TOKEN_METADATA_KEY, token)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.unary_unary(method, *args, **kwargs), self._token)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.unary_stream(method, *args, **kwargs), self._token)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.stream_unary(method, *args, **kwargs), self._token)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TokenCall(self._channel.stream_stream(method, *args, **kwargs), self._token)

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


def open_channel(address: str, token: str) -> grpc.Channel:
    return _TokenChannel(grpc.insecure_channel(address, options=CHANNEL_OPTIONS), token)


class ChannelPool:
    """One channel per peer address, reused by every stub in the process."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def get(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            with self._lock:
                channel = self._channels.get(address)
                if channel is None:
                    channel = open_channel(address, self._token)
                    self._channels[address] = channel
        return channel

    def discard(self, address: str) -> None:
        with self._lock:
            channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
