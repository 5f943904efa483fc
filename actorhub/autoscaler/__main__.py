"""`python -m actorhub.autoscaler --session-dir DIR`: the autoscaler of a cluster from `actorhub up`.

Two processes, as the hub has its supervisor. The one `actorhub up` starts supervises: it
writes `autoscaler.pid` (so `actorhub stop` and `actorhub down` stop it with the cluster) and
runs the loop as its child (`--run`, in its process group, dying with it), restarting a child
that died (a crash, a SIGKILL, the OOM killer) after 0.5 s, doubling to 10 s while it keeps
dying young. The child reads the cluster config `actorhub up` checked and left in the session,
and picks up the nodes an earlier child launched (`local_provider.py`'s state file). Both log
to `logs/autoscaler.out`. SIGTERM to the supervisor stops the child, then itself; a child that
ends on its own (the hub and its supervisor are gone: the cluster was stopped) ends it too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from actorhub.autoscaler.autoscaler import PID_ROLE, STATUS_FILE, Autoscaler
from actorhub.autoscaler.config import CONFIG_FILE, ClusterConfig
from actorhub.autoscaler.local_provider import LocalNodeProvider
from actorhub.cluster.launcher import SUPERVISOR_ROLE, live_roles
from actorhub.cluster.lifetime import set_parent_death_signal
from actorhub.cluster.session import Session
from actorhub.config import Config, ConfigError
from actorhub.exceptions import RpcFailedError
from actorhub.wire.autoscaler import AutoscalerHubClient, NodeLoad
from actorhub.wire.store import NodeStoreClient
from actorhub.wire.tls import load_tls
from actorhub.wire.transport import ChannelPool

EXIT_BAD_CONFIG = 2
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 10.0
HEALTHY_UPTIME_S = 30.0  # a child that ran this long was not in a crash loop

log = logging.getLogger("actorhub.autoscaler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actorhub.autoscaler")
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--run", action="store_true", help="run the loop (the supervisor's child)")
    args = parser.parse_args(argv)
    session = Session(args.session_dir)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    return run(session) if args.run else supervise(session)


def _on_stop(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _hub_gone(session: Session) -> bool:
    """Neither the hub nor its supervisor runs: the cluster was stopped (a hub being restarted
    still has its supervisor)."""
    return not ({"hub", SUPERVISOR_ROLE} & live_roles(session))


def supervise(session: Session) -> int:
    pid_file = session.pid_file(PID_ROLE)
    pid_file.write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    _on_stop(stop)
    pause = RESTART_FIRST_S
    code = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            child = subprocess.Popen([sys.executable, "-m", "actorhub.autoscaler", "--session-dir",
                                      str(session.path), "--run"], stdin=subprocess.DEVNULL)
            while child.poll() is None and not stop.wait(0.2):
                pass
            if stop.is_set():
                with contextlib.suppress(OSError):
                    child.terminate()
                child.wait()
                break
            code = child.returncode
            if code in (0, EXIT_BAD_CONFIG) or _hub_gone(session):
                break
            pause = RESTART_FIRST_S if time.monotonic() - started > HEALTHY_UPTIME_S else pause
            log.warning("the autoscaler (pid %d) ended with %s; restarting it in %.1f s", child.pid,
                        f"signal {-code}" if code < 0 else f"code {code}", pause)
            stop.wait(pause)
            pause = min(pause * 2, RESTART_MAX_S)
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
    return code if code == EXIT_BAD_CONFIG else 0


def run(session: Session) -> int:
    set_parent_death_signal(signal.SIGTERM)  # ends with its supervisor, however that ends
    try:
        base = Config.load()
        cluster = ClusterConfig.model_validate_json((session.path / CONFIG_FILE).read_text())
        tls = load_tls(base)
    except (OSError, ValueError, ConfigError) as err:
        print(f"actorhub autoscaler: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    stop = threading.Event()
    _on_stop(stop)
    channels = ChannelPool(session.token, base.max_message_bytes, tls=tls)
    deadlines = base.deadlines
    hub_address = session.hub_address
    provider = LocalNodeProvider(cluster, session, hub_address, base)

    def holds_objects(node: NodeLoad) -> bool:
        try:
            listing = NodeStoreClient(channels, node.address, deadlines).list()
        except RpcFailedError:
            return True
        return any(not o.is_copy for o in listing.objects)

    autoscaler = Autoscaler(cluster, provider, AutoscalerHubClient(channels, hub_address, deadlines),
                            holds_objects, session.path / STATUS_FILE)
    log.info("autoscaler of cluster %s running (pid %d, hub at %s, node types: %s, nodes it manages: %d)",
             cluster.cluster_name, os.getpid(), hub_address, ", ".join(sorted(cluster.available_node_types)),
             len(provider.non_terminated_nodes()))
    try:
        autoscaler.run(stop, lambda: _hub_gone(session))
    finally:
        provider.close()
        channels.close()
    log.info("autoscaler stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
