"""`python -m actorhub.hub --session-dir DIR [--port N] [--bind-host HOST]`: the hub.

The launcher waits for the session's address file, so it is written only once the server
serves. The server is gRPC's asyncio one on its own loop thread (`ServerLoop`); the main thread
only waits for the stop. The process exits 0 after the Shutdown RPC or SIGTERM (the same path).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

from actorhub._proto.v1 import hub_pb2_grpc
from actorhub.cluster.session import ADDRESS_FILE, Session
from actorhub.config import Config, ConfigError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.control_store import SQLiteControlStore, StoreWriter
from actorhub.hub.service import HubServicer
from actorhub.wire.server import ServerLoop
from actorhub.wire.transport import AsyncChannelPool

log = logging.getLogger("actorhub.hub")

_STOP_GRACE_S = 1.0
_STOP_TIMEOUT_S = 5.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.hub", description=__doc__)
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=None, help="0 or absent: a free port")
    parser.add_argument("--bind-host", default=None, help="default: ACTORHUB_BIND_HOST or 127.0.0.1")
    return parser.parse_args(argv)


def _setup_logging(session: Session, level_name: str) -> None:
    session.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(session.logs / "hub.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    # The hub's own lifecycle lines are worth keeping even when the user asked for WARNING.
    configured = logging.getLevelName(level_name.upper())
    level = configured if isinstance(configured, int) else logging.WARNING
    root.setLevel(min(level, logging.INFO))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = Config.load(bind_host=args.bind_host, hub_port=args.port)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    session = Session(args.session_dir)
    _setup_logging(session, config.logging_level)
    session.pid_file("hub").write_text(f"{os.getpid()}\n")

    stop = threading.Event()
    store = SQLiteControlStore.in_session(session.path)
    writer = StoreWriter(store)
    # One event loop serves every RPC: leases, long polls and actor starts are coroutines.
    server = ServerLoop(session.token, name="hub-loop", max_message_bytes=config.max_message_bytes)
    servicer = HubServicer(
        ActorTable(), writer, AsyncChannelPool(session.token, config.max_message_bytes), server.loop,
        on_stop=stop.set, deadlines=config.deadlines,
    )
    hub_pb2_grpc.add_HubServicer_to_server(servicer, server.server)
    try:
        address = server.bind(config.bind_host, config.hub_port)
    except (OSError, RuntimeError) as err:
        log.error("cannot start the hub: %s", err)
        print(f"actorhub hub: {err}", file=sys.stderr)
        server.stop(0)
        writer.close()
        store.close()
        return 1
    server.start()
    session.write_hub_address(address)
    log.info("hub serving at %s (pid %d)", address, os.getpid())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        servicer.request_shutdown()  # only schedules it on the loop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Wait in slices so the signal handler gets to run promptly on the main thread.
    while not stop.wait(0.5):
        pass
    log.info("hub stopping")
    _on_loop(server, server.server.stop(_STOP_GRACE_S), "stopping the server")
    _on_loop(server, servicer.close(), "closing the service")
    server.stop(0)
    writer.close()
    store.close()
    _remove_own_files(session, address)
    log.info("hub stopped")
    return 0


def _on_loop(server: ServerLoop, coro: Coroutine[Any, Any, None], what: str) -> None:
    try:
        server.submit(coro).result(_STOP_TIMEOUT_S)
    except (concurrent.futures.TimeoutError, RuntimeError):
        log.warning("%s took over %.0f s; going on", what, _STOP_TIMEOUT_S)


def _remove_own_files(session: Session, address: str) -> None:
    """A stopped hub must not be found by init(address="auto")."""
    try:
        if session.hub_address == address:
            (session.path / ADDRESS_FILE).unlink(missing_ok=True)
        session.pid_file("hub").unlink(missing_ok=True)
    except OSError as err:
        log.warning("could not remove the hub's address or pid file: %s", err)


if __name__ == "__main__":
    sys.exit(main())
