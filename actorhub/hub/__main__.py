"""`python -m actorhub.hub --session-dir DIR [--port N] [--bind-host HOST] [--store PATH] [--recover]`:
the hub.

Before it serves, the hub opens its store (`control_store`) and rebuilds its tables from it: a
hub restarted by its supervisor (`hub/supervisor.py`, which passes --recover) carries on where
the crashed one stopped. The launcher waits for the session's address file, so it is written
only once the server serves; a supervisor learns it from one byte on --ready-fd. The server is
gRPC's asyncio one on its own loop thread (`ServerLoop`); the main thread only waits for the
stop.

Exit status: 0 after the Shutdown RPC or SIGTERM (the same path); 1 when it cannot bind; 3
when it refuses its store (missing with --recover, corrupt, another version), with the reason
on stderr and in hub.log.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

from actorhub.cluster.addresses import parse_address
from actorhub.cluster.lifetime import set_parent_death_signal
from actorhub.cluster.session import ADDRESS_FILE, Session
from actorhub.config import Config, ConfigError
from actorhub.hub.control_store import HUB_STARTS, STORE_FILE, StoreBatch, StoreRefusedError, StoreWriter, open_store
from actorhub.wire.server import ServerLoop
from actorhub.wire.tls import load_tls
from actorhub.wire.transport import AsyncChannelPool

log = logging.getLogger("actorhub.hub")
# The hub's own modules, imported in main() once the port listens (a standby imports them before
# it waits): a node agent starting beside the hub then connects at once, its first call waiting
# for the server to start, rather than being refused and retrying after gRPC's reconnect backoff
# (50 ms, then 80, 128...), which a first init() waits for.
_SERVICE_MODULES = ("actorhub._proto.v1.hub_pb2_grpc", "actorhub._proto.v1.runtime_env_pb2_grpc",
                    "actorhub.hub.service", "actorhub.hub.metrics_export", "actorhub.hub.runtime_env_packages",
                    "actorhub.runtime.checkpoint_files")

_STOP_GRACE_S = 1.0
_STOP_TIMEOUT_S = 5.0
EXIT_STORE_REFUSED = 3


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.hub", description=__doc__)
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=None, help="0 or absent: a free port")
    parser.add_argument("--bind-host", default=None, help="default: ACTORHUB_BIND_HOST or 127.0.0.1")
    parser.add_argument("--store", type=Path, default=None,
                        help=f"the durable store (default: ACTORHUB_HUB_STORE_PATH, else {STORE_FILE} in the session)")
    parser.add_argument("--recover", action="store_true",
                        help="a restart: the store must exist (refuse to start empty)")
    parser.add_argument("--supervisor-pid", type=int, default=None,
                        help="die with this parent process (the hub's supervisor)")
    parser.add_argument("--ready-fd", type=int, default=None, help="write one byte here once serving")
    parser.add_argument("--standby-fd", type=int, default=None,
                        help="a standby: wait, imports done, until a byte arrives here (EOF: exit 0)")
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
    if args.supervisor_pid is not None:
        # Dies with its supervisor: `actorhub stop` or a kill of the supervisor ends both.
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != args.supervisor_pid:
            return 1
    if args.standby_fd is not None and not _wait_for_promotion(args.standby_fd):
        return 0
    try:
        config = Config.load(bind_host=args.bind_host, hub_port=args.port, hub_store_path=args.store)
        tls = load_tls(config)  # a bad file stops the hub here, named, before anything listens
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    session = Session(args.session_dir)
    _setup_logging(session, config.logging_level)
    session.pid_file("hub").write_text(f"{os.getpid()}\n")
    # One event loop serves every RPC: leases, long polls and actor starts are coroutines. It
    # listens first (_SERVICE_MODULES); its services are added before it starts.
    server = ServerLoop(session.token, name="hub-loop", max_message_bytes=config.max_message_bytes, tls=tls,
                        pin_io_threads=config.pin_io_threads)
    try:
        address = server.bind(config.bind_host, config.hub_port)
    except (OSError, RuntimeError) as err:
        log.error("cannot start the hub: %s", err)
        print(f"actorhub hub: {err}", file=sys.stderr)
        server.stop(0)
        return 1
    from actorhub._proto.v1 import hub_pb2_grpc, runtime_env_pb2_grpc
    from actorhub.hub.actor_table import ActorTable
    from actorhub.hub.metrics_export import HubMetrics
    from actorhub.hub.records import HubInfo
    from actorhub.hub.runtime_env_packages import RuntimeEnvPackagesServicer
    from actorhub.hub.service import HubServicer
    from actorhub.runtime.checkpoint_files import CheckpointFiles

    store_path = config.hub_store_path or session.path / STORE_FILE
    try:
        store = open_store(store_path, must_exist=args.recover)
        snapshot = store.load()
    except StoreRefusedError as err:
        log.error("cannot start the hub: %s", err)
        print(f"actorhub hub: {err}", file=sys.stderr)
        server.stop(0)
        return EXIT_STORE_REFUSED
    starts = snapshot.counters.get(HUB_STARTS, 0) + 1
    store.save(StoreBatch(counters={HUB_STARTS: starts}))
    table = ActorTable()
    recovered = table.restore(snapshot)
    unconfirmed_nodes, unconfirmed_jobs = table.unconfirmed()
    if starts > 1:
        log.info("hub start %d on %s: %d actors, %d nodes and %d jobs restored", starts, store_path,
                 len(snapshot.actors), len(unconfirmed_nodes), len(unconfirmed_jobs))

    stop = threading.Event()
    writer = StoreWriter(store)
    servicer = HubServicer(
        table, writer, AsyncChannelPool(session.token, config.max_message_bytes, tls), server.loop,
        on_stop=stop.set, deadlines=config.deadlines,
        info=(info := HubInfo(started_at=time.time(), restarts=starts - 1, store_path=str(store_path),
                              object_reconstruction=config.enable_object_reconstruction)),
    )
    # Actors' checkpoints beside the store: as durable as it, kept across hub restarts.
    servicer.checkpoints = CheckpointFiles(store_path.parent / "checkpoints")
    hub_pb2_grpc.add_HubServicer_to_server(servicer, server.server)
    # Beside the store, so a restarted hub (same store) still serves every package.
    runtime_env_pb2_grpc.add_RuntimeEnvPackagesServicer_to_server(
        RuntimeEnvPackagesServicer(store_path.parent / "runtime_env_packages"), server.server)
    # Before nodes can register (again): each reports its endpoint's port to it.
    metrics = servicer.metrics = HubMetrics(table.cluster_status, table.alive_nodes, info, session.path)
    server.start()
    server.call_soon(servicer.recover, recovered, unconfirmed_nodes, unconfirmed_jobs)
    server.call_soon(servicer.start_health_checks)
    session.write_hub_address(address)
    log.info("hub serving at %s (pid %d)", address, os.getpid())
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        except OSError as err:  # the supervisor died: PDEATHSIG ends this process too
            log.warning("could not tell the supervisor the hub serves: %s", err)
    # Its endpoint (an HTTP server and two threads) after the hub serves: a cluster's start waits
    # for the hub, not for its metrics. Nodes' ports are kept meanwhile.
    metrics.start(parse_address(address)[0])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        servicer.request_shutdown()  # only schedules it on the loop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Wait in slices so the signal handler gets to run promptly on the main thread.
    while not stop.wait(0.5):
        pass
    log.info("hub stopping")
    metrics.close()
    _on_loop(server, server.server.stop(_STOP_GRACE_S), "stopping the server")
    _on_loop(server, servicer.close(), "closing the service")
    server.stop(0)
    writer.close()
    store.close()
    _remove_own_files(session, address)
    log.info("hub stopped")
    return 0


def _wait_for_promotion(fd: int) -> bool:
    """A standby hub (hub/supervisor.py): everything imported, wait to take over. False: the
    supervisor ended the standby instead."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401  (the server loop's, imported lazily by a cold start)
    for name in _SERVICE_MODULES:
        importlib.import_module(name)
    try:
        promoted = os.read(fd, 1) != b""
    except OSError:
        promoted = False
    os.close(fd)
    return promoted


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
