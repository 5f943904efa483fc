"""`python -m actorhub.dashboard.server`: the dashboard's HTTP server (aiohttp), started and
restarted by `dashboard/supervisor.py`.

Routes come from the modules in ROUTE_MODULES, each a `routes` table (aiohttp's
`RouteTableDef`), so a feature adds its pages by adding a module. Every route needs the cluster
token (`http_auth.py`) but the web page's files (`page_routes.py`). Once it listens, the server
writes `host:port` to the session's `dashboard_address` (what `init()`, the CLI and
`JobSubmissionClient()` read) and a byte to its ready pipe. SIGTERM (the cluster is stopping,
or its supervisor died) stops every running job, then the server.

Port: the one given (`--port`); with `--port-retries N`, as Ray does for its default port, the
next N ports are tried when it is taken. A port that cannot be had ends the process with
EXIT_PORT_IN_USE and a line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from actorhub.cluster.launcher import DASHBOARD_ADDRESS_FILE as ADDRESS_FILE
from actorhub.cluster.lifetime import set_parent_death_signal
from actorhub.cluster.session import Session
from actorhub.config import Config, ConfigError
from actorhub.dashboard.cluster_state import ClusterStateReader
from actorhub.dashboard.context import CONTEXT, DashboardContext
from actorhub.dashboard.http_auth import token_middleware
from actorhub.dashboard.job_env import EntrypointEnvs
from actorhub.dashboard.job_manager import JobManager
from actorhub.dashboard.job_store import STORE_FILE, JobStore
from actorhub.dashboard.page_routes import is_page_request
from actorhub.runtime_env.packaging import MAX_PACKAGE_BYTES
from actorhub.wire.runtime_env import RuntimeEnvPackagesClient
from actorhub.wire.tls import load_tls
from actorhub.wire.transport import ChannelPool

ROUTE_MODULES = (
    "actorhub.dashboard.job_routes", "actorhub.dashboard.metrics_routes", "actorhub.dashboard.state_routes",
    "actorhub.dashboard.page_routes",
)
EXIT_PORT_IN_USE = 4
EXIT_CONFIG = 2

log = logging.getLogger("actorhub.dashboard")


class PortInUseError(OSError):
    pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.dashboard.server")
    parser.add_argument("--session-dir", type=Path, required=True)
    parser.add_argument("--hub-address", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port-retries", type=int, default=0)
    parser.add_argument("--node-id", default="")
    parser.add_argument("--ready-fd", type=int, default=None)
    return parser.parse_args(argv)


def build_app(context: DashboardContext) -> web.Application:
    # Bodies up to a runtime_env package's limit: a working_dir is uploaded in one request.
    app = web.Application(middlewares=[token_middleware(context.token, is_public=is_page_request)],
                          client_max_size=MAX_PACKAGE_BYTES + 2**20)
    app[CONTEXT] = context
    for name in ROUTE_MODULES:
        app.add_routes(importlib.import_module(name).routes)
    return app


async def _listen(runner: web.AppRunner, host: str, port: int, retries: int) -> int:
    for candidate in range(port, port + retries + 1):
        site = web.TCPSite(runner, host, candidate)
        try:
            await site.start()
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            continue
        if candidate == 0:  # a free port: the one bound
            return int(runner.addresses[-1][1])
        return candidate
    tried = f"{port}" if not retries else f"{port} to {port + retries}"
    raise PortInUseError(errno.EADDRINUSE, f"the dashboard's port {tried} on {host} is in use; pass another "
                                           "(--dashboard-port, or init(dashboard_port=))")


def _write_address(session_dir: Path, address: str) -> None:
    tmp = session_dir / f".{ADDRESS_FILE}.{os.getpid()}"
    tmp.write_text(address + "\n")
    tmp.replace(session_dir / ADDRESS_FILE)


async def serve(args: argparse.Namespace, config: Config) -> int:
    session = Session(args.session_dir)
    token = session.token
    channels = ChannelPool(token, tls=load_tls(config))
    packages = RuntimeEnvPackagesClient(channels, args.hub_address, config.deadlines, config.max_message_bytes)
    envs = EntrypointEnvs(session.path, args.hub_address, packages.fetch)
    jobs = JobManager(session.path, JobStore(session.path / STORE_FILE), envs, os.environ, node_id=args.node_id or None)
    await jobs.start()
    state = ClusterStateReader(channels, args.hub_address)
    context = DashboardContext(session.path, token, args.hub_address, config, jobs, packages, state)
    runner = web.AppRunner(build_app(context), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await _listen(runner, args.host, args.port, args.port_retries)
    except PortInUseError as e:
        # The jobs it adopted run on: a later server may have the port.
        print(f"actorhub dashboard: {e.strerror}", file=sys.stderr, flush=True)
        await runner.cleanup()
        jobs.detach()
        channels.close()
        return EXIT_PORT_IN_USE
    try:
        _write_address(session.path, f"{args.host}:{port}")
        log.info("dashboard serves at http://%s:%d", args.host, port)
        if args.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(args.ready_fd, b"r")
                os.close(args.ready_fd)
        await stop.wait()
        log.info("stopping: ending the running jobs")
        return 0
    finally:
        await jobs.close()
        await runner.cleanup()
        channels.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Its supervisor's death (a SIGKILL of the cluster's processes) ends it, and so its jobs.
    set_parent_death_signal(signal.SIGTERM)
    try:
        config = Config.load()
    except ConfigError as e:
        print(f"actorhub dashboard: {e}", file=sys.stderr)
        return EXIT_CONFIG
    session = Session(args.session_dir)
    handler = logging.FileHandler(session.logs / "dashboard.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    session.pid_file("dashboard").write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(serve(args, config))
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(session.pid_file("dashboard").read_text()) == os.getpid():
                session.pid_file("dashboard").unlink()


if __name__ == "__main__":
    sys.exit(main())
