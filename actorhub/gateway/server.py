"""The gateway process: a driver of the cluster that serves its named typed actors over HTTP and gRPC.

It connects with `init(address=...)` like any program, and calls actors through handles looked
up by name (directory.py), from one event loop that serves both protocols. Run in the
foreground by `actorhub serve-gateway`, or with a head by `actorhub start --head --gateway-port N`
(`python -m actorhub.gateway`, cluster/launcher.py), which also passes:
- the session directory: the gateway writes its addresses to `gateway_address` there (JSON
  {"http": "host:port", "grpc": "host:port"}) and its pid to `gateway.pid`, so that
  `actorhub stop` stops it with the cluster;
- the hub supervisor's pid: when that process is gone, the cluster was stopped, and so is the
  gateway.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

import actorhub
from actorhub.cluster.launcher import GATEWAY_ADDRESS_FILE
from actorhub.cluster.lifetime import process_alive
from actorhub.gateway import grpc_service
from actorhub.gateway.directory import ActorDirectory
from actorhub.gateway.http_api import build_app
from actorhub.gateway.invoke import Invoker
from actorhub.runtime.runtime import current
from actorhub.wire.server import new_event_loop

PID_ROLE = "gateway"
_CLUSTER_POLL_S = 0.5

log = logging.getLogger("actorhub.gateway")


@dataclass(frozen=True)
class GatewayOptions:
    address: str
    """The hub's HOST:PORT, or "auto": the newest cluster on this machine."""
    host: str = "127.0.0.1"
    port: int = 0
    """The HTTP port; 0: a free one."""
    grpc_port: int | None = 0
    """The gRPC port; 0: a free one; None: no gRPC."""
    session_dir: Path | None = None
    hub_supervisor_pid: int | None = None


def run(options: GatewayOptions) -> int:
    """Connect, serve until stopped, disconnect; the exit status."""
    actorhub.init(address=options.address, log_to_driver=False, configure_logging=False)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_serve(options))
    finally:
        actorhub.shutdown()


async def _serve(options: GatewayOptions) -> int:
    runtime = current()
    invoker = Invoker(ActorDirectory(runtime))
    runner = web.AppRunner(build_app(invoker, runtime.token), access_log=None, handle_signals=False)
    await runner.setup()
    grpc_server = None
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        http_port = int(runner.addresses[-1][1])
        addresses = {"http": f"{options.host}:{http_port}"}
        if options.grpc_port is not None:
            grpc_server, grpc_port = await grpc_service.start(invoker, runtime.token, options.host, options.grpc_port)
            addresses["grpc"] = f"{options.host}:{grpc_port}"
        if options.session_dir is not None:
            _write_addresses(options.session_dir, addresses)
        shown = f"HTTP at http://{addresses['http']}" + (f", gRPC at {addresses['grpc']}" if "grpc" in addresses
                                                          else "")
        print(f"actorhub gateway serves {shown}", flush=True)
        log.info("serving %s", shown)
        await _until_stopped(options.hub_supervisor_pid)
        return 0
    finally:
        if grpc_server is not None:
            await grpc_server.stop(1.0)
        await runner.cleanup()


async def _until_stopped(hub_supervisor_pid: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _CLUSTER_POLL_S)
        if hub_supervisor_pid is not None and not process_alive(hub_supervisor_pid):
            log.info("the cluster's hub supervisor has exited: stopping")
            return


def _write_addresses(session_dir: Path, addresses: dict[str, str]) -> None:
    tmp = session_dir / f".{GATEWAY_ADDRESS_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(addresses) + "\n")
    tmp.replace(session_dir / GATEWAY_ADDRESS_FILE)
