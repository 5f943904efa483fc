"""`python -m actorhub.hub --session-dir DIR [--port N] [--bind-host HOST]`: the hub.

The launcher waits for the session's address file, so it is written only once the server
serves. The process exits 0 after the Shutdown RPC or SIGTERM (the same path).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from actorhub._proto.v1 import hub_pb2_grpc
from actorhub.cluster.session import ADDRESS_FILE, Session
from actorhub.config import Config, ConfigError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.control_store import SQLiteControlStore
from actorhub.hub.service import HubServicer
from actorhub.wire.server import bind, make_server
from actorhub.wire.transport import ChannelPool

log = logging.getLogger("actorhub.hub")

# Long polls and leases each hold a server thread for their whole life.
_SERVER_THREADS = 256
_STOP_GRACE_S = 1.0


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
    servicer = HubServicer(
        ActorTable(), store, ChannelPool(session.token), on_stop=stop.set, deadlines=config.deadlines
    )
    server = make_server(session.token, max_workers=_SERVER_THREADS)
    hub_pb2_grpc.add_HubServicer_to_server(servicer, server)
    try:
        address = bind(server, config.bind_host, config.hub_port)
    except (OSError, RuntimeError) as err:
        log.error("cannot start the hub: %s", err)
        print(f"actorhub hub: {err}", file=sys.stderr)
        store.close()
        return 1
    server.start()
    session.write_hub_address(address)
    log.info("hub serving at %s (pid %d)", address, os.getpid())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Not in the handler itself: shutting down makes RPCs, and the main thread is waiting.
        threading.Thread(target=servicer.shutdown_cluster, name="hub-sigterm", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Wait in slices so the signal handler gets to run promptly on the main thread.
    while not stop.wait(0.5):
        pass
    log.info("hub stopping")
    server.stop(_STOP_GRACE_S).wait()
    servicer.close()
    store.close()
    _remove_own_files(session, address)
    log.info("hub stopped")
    return 0


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
