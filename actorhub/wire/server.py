"""gRPC servers: the cluster-token check, message limits, and an asyncio server on its own loop.

Every actorhub process serves with gRPC's asyncio server (`ServerLoop`): a stream or a
waiting request is a coroutine, not a thread, so many callers, long polls and actors being
started cost no server threads. Handlers that do real work hand it to their own threads
(an actor's mailbox, a store transfer) and come back to the loop with the result.

The token is checked from the call's metadata, before any of its body is read: a caller
without it is refused by a handler that reads nothing, so idle or huge unauthenticated calls
hold no thread and make the server read no bytes.

With TLS configured (tls.py) a server's port is opened with TLS and requires a client
certificate signed by the cluster's CA; the token is still checked on top.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent import futures
from typing import Any, NoReturn, TypeVar

import grpc

from actorhub.config import DEFAULT_MAX_MESSAGE_BYTES
from actorhub.wire import io_affinity
from actorhub.wire.tls import TlsCredentials
from actorhub.wire.transport import TOKEN_METADATA_KEY

T = TypeVar("T")
log = logging.getLogger("actorhub")


# gRPC clients refuse trailers over 16 KiB, and would then report RESOURCE_EXHAUSTED instead
# of the real code; error details quote ids and names a caller sent, so they are cut short.
MAX_DETAILS_CHARS = 2048


def bounded_details(details: str) -> str:
    if len(details) <= MAX_DETAILS_CHARS:
        return details
    cut = len(details) - MAX_DETAILS_CHARS
    return f"{details[:MAX_DETAILS_CHARS]}... ({cut:,} more characters cut)"


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> NoReturn:
    """End the call with `code`; details quoting what the caller sent stay within gRPC's limits."""
    await context.abort(code, bounded_details(details))
    raise AssertionError("unreachable: context.abort raises")


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Two servers on one port would split calls between processes.
        ("grpc.so_reuseport", 0),
    ]


def _token_problem(token: bytes, metadata: Any) -> str | None:
    """Why the call's metadata is refused, or None when it carries the cluster token."""
    sent = b""
    for key, value in metadata or ():
        if key == TOKEN_METADATA_KEY:
            sent = value.encode() if isinstance(value, str) else value
            break
    if not sent:
        return "missing cluster token"
    if not hmac.compare_digest(sent, token):  # constant time: no timing oracle on the token
        return "wrong cluster token"
    return None


def _deny(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    # A streaming handler whatever the method's kind: gRPC reads a unary request's whole body
    # before calling its handler, a streaming one reads nothing until the handler asks.
    def abort(request_iterator: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_stream_rpc_method_handler(abort)


def _deny_async(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def abort(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_stream_rpc_method_handler(abort)


class TokenCheck(grpc.ServerInterceptor):
    """Refuses, before reading its body, every RPC whose metadata lacks the cluster token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        problem = _token_problem(self._token, handler_call_details.invocation_metadata)
        if problem is not None:
            return _deny(problem)
        return continuation(handler_call_details)


class AsyncTokenCheck(grpc.aio.ServerInterceptor):
    """TokenCheck for the asyncio server."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        problem = _token_problem(self._token, handler_call_details.invocation_metadata)
        if problem is not None:
            return _deny_async(problem)
        return await continuation(handler_call_details)


def make_server(
    token: str, max_workers: int = 64, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> grpc.Server:
    """A thread-pool server: only for tests' stand-in peers; actorhub's processes use ServerLoop."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="actorhub-rpc"),
        interceptors=[TokenCheck(token)],
        options=server_options(max_message_bytes),
        maximum_concurrent_rpcs=None,
    )


def bind(server: grpc.Server | grpc.aio.Server, host: str, port: int = 0, tls: TlsCredentials | None = None) -> str:
    """Listen on host:port (0: any free port), with mutual TLS when `tls` is given; the address."""
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        if tls.names is not None and host not in _ANY_HOST and not tls.covers(host):
            # Not fatal: peers may dial this process by another name that the certificate has.
            log.warning("the certificate %s names none of %s (its names: %s); peers dialling %s will refuse it",
                        tls.cert_path, host, ", ".join(v for _, v in tls.names) or "none", host)
        bound = server.add_secure_port(f"{host}:{port}", tls.server_credentials())
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return f"{host}:{bound}"


# Wildcard binds: what peers dial there is another address, not known here.
_ANY_HOST = frozenset({"0.0.0.0", "::", "[::]", ""})


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed: a cross-thread wake-up (a reply posted by an actor's
    thread) costs less there, which shows in a sync call's round trip."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServerLoop:
    """An asyncio gRPC server running on an event loop in a thread of its own.

    Sync code registers services, binds, starts and stops it; handlers run on the loop.
    `submit` runs a coroutine there from any thread, `call_soon` a plain callback.
    """

    def __init__(
        self, token: str, *, name: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TlsCredentials | None = None, pin_io_threads: bool = True,
    ) -> None:
        """`pin_io_threads`: Config.pin_io_threads (io_affinity.py)."""
        self.tls = tls
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.server: grpc.aio.Server = self.submit(self._make(token, max_message_bytes)).result()
        self._stopped = False
        if pin_io_threads:
            io_affinity.pin_io_threads(self._thread)

    async def _make(self, token: str, max_message_bytes: int) -> grpc.aio.Server:
        # Made on the loop: the asyncio server binds to the loop it is created on.
        return grpc.aio.server(
            interceptors=[AsyncTokenCheck(token)],
            options=server_options(max_message_bytes),
            maximum_concurrent_rpcs=None,
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        # Its threads start from the loop's (pinned) thread: they take all the CPUs back.
        self.loop.set_default_executor(futures.ThreadPoolExecutor(initializer=io_affinity.release_current_thread))
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def bind(self, host: str, port: int = 0) -> str:
        return bind(self.server, host, port, self.tls)

    def start(self) -> None:
        self.submit(self.server.start()).result()

    def stop(self, grace: float | None = 0.5, timeout: float = 5.0) -> None:
        """Stop serving (in-flight calls get `grace` seconds), then end the loop. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.in_loop:
            raise RuntimeError("ServerLoop.stop() called from its own loop")
        try:
            self.submit(self.server.stop(grace)).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # a stuck handler: the loop ends below all the same
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def wait_stopped(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
