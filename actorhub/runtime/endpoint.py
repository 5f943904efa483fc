"""Endpoint: what a process has before it has an identity.

Its gRPC server (serving the Worker service) and the address it is bound to, its channels
and its hub client. A driver must have an address to register its job, and a worker must serve
StartActor before it knows which actor it hosts; so both make their endpoint first, and build
their Runtime on it once their identity is known. The Runtime then owns it and closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from actorhub.config import DEFAULT_MAX_MESSAGE_BYTES, RpcDeadlines
from actorhub.wire.hub import HubClient
from actorhub.wire.server import ServerLoop
from actorhub.wire.stream_loop import StreamLoop
from actorhub.wire.tls import TlsCredentials
from actorhub.wire.transport import AsyncChannelPool, ChannelPool


class Service(Protocol):
    """The Worker service a process serves (worker/service.py, made at the process edge)."""

    def serve_on(self, server: Any, loop: ServerLoop) -> None: ...


class Endpoint:
    def __init__(
        self,
        *,
        token: str,
        hub_address: str,
        bind_host: str,
        deadlines: RpcDeadlines,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        hub_reconnect_s: float = 60.0,
        tls: TlsCredentials | None = None,
        pin_io_threads: bool = True,
    ) -> None:
        """`hub_reconnect_s` is Config.hub_reconnect_timeout_s: how long this process rides
        out a hub that is down (restarting) before what needs it fails. `tls`: serve and dial
        with mutual TLS (wire/tls.py), None for plain channels."""
        self.token = token
        self.hub_address = hub_address
        self.deadlines = deadlines
        self.channels = ChannelPool(token, max_message_bytes, tls)
        self._server = ServerLoop(token, name="actorhub-io", max_message_bytes=max_message_bytes, tls=tls,
                                  pin_io_threads=pin_io_threads)
        self.address = self._server.bind(bind_host)
        # Call streams to actors, and the job lease, run on the server's loop (wire/stream_loop.py
        # says why).
        self.streams = StreamLoop(self._server, AsyncChannelPool(token, max_message_bytes, tls))
        self.hub = HubClient(self.channels, hub_address, deadlines, reconnect_s=hub_reconnect_s, streams=self.streams)
        self._close_service: Callable[[], None] = _nothing

    def serve(self, service: Service, close: Callable[[], None]) -> None:
        """Start serving `service` (made by the process's edge: worker/ sits above runtime/)."""
        service.serve_on(self._server.server, self._server)
        self._close_service = close
        self._server.start()

    def stop_serving(self) -> None:
        self._close_service()
        self.streams.close()
        self._server.stop(grace=0.5, timeout=2.0)

    def close(self) -> None:
        """For an endpoint that never got its runtime (a failed init); a Runtime closes its own."""
        self.stop_serving()
        self.channels.close()


def _nothing() -> None:
    pass
