"""`actorhub start` and `actorhub stop`: clusters that outlive the command that started them.

`start --head` starts a hub and a node agent; `start --address HOST:PORT` adds a node agent,
in the head's session when the head is on this host, else (another host) in a session of its
own holding the token it was given (`launcher.join_cluster`). With `--block` the command
stays in the foreground while its processes run and stops them on SIGTERM or SIGINT, as a
container's main process must.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from actorhub.cli.common import (
    CliError,
    HubClient,
    HubUnreachableError,
    Target,
    cpu_count_words,
    live_pids,
    processes_naming,
)
from actorhub.cluster import addresses
from actorhub.cluster.credentials import given_token
from actorhub.cluster.launcher import (
    join_cluster,
    leftovers,
    remove_segments,
    start_gateway,
    start_head,
    start_node,
    stop_processes,
    stop_session,
    wait_for_dashboard,
    wait_for_gateway,
)
from actorhub.cluster.session import ADDRESS_FILE, TOKEN_FILE, Session, list_sessions, make_latest, session_for_address
from actorhub.config import Config
from actorhub.wire.records import ClusterStatus, NodeStatus
from actorhub.wire.tls import load_tls
from actorhub.wire.tls_probe import check_tls

_POLL_S = 0.02
_HUB_RETRY_S = 0.5


@dataclass(frozen=True)
class StartFlags:
    """The flags `start --head` and `start --address` share."""

    num_cpus: float | None = None
    node_ip_address: str | None = None
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    block: bool = False
    num_gpus: int | None = None
    memory: int | None = None
    resources: str | None = None  # JSON, checked by Config
    enable_object_reconstruction: bool | None = None
    metrics_export_port: int | None = None

    def config(self, **more: object) -> Config:
        """Flags first, then ACTORHUB_* variables (ACTORHUB_TOKEN, ACTORHUB_TLS_CERT...)."""
        return Config.load(num_cpus=self.num_cpus, node_ip_address=self.node_ip_address, token_file=self.token_file,
                           tls_cert=self.tls_cert, tls_key=self.tls_key, tls_ca=self.tls_ca, num_gpus=self.num_gpus,
                           memory=self.memory, resources=self.resources,
                           enable_object_reconstruction=self.enable_object_reconstruction,
                           metrics_export_port=self.metrics_export_port, **more)


@dataclass(frozen=True)
class DashboardFlags:
    """`start --head`'s dashboard flags."""

    include: bool = True
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class GatewayFlags:
    """`start --head --gateway-port N`: the gateway (actorhub/gateway/) beside the hub."""

    port: int
    grpc_port: int = 0
    host: str = "127.0.0.1"


def start_head_command(port: int | None, store: Path | None, flags: StartFlags,
                       dashboard: DashboardFlags = DashboardFlags(), gateway: GatewayFlags | None = None) -> int:
    if port is not None:
        addresses.check_port(port, "--port")
    if dashboard.port is not None:
        addresses.check_port(dashboard.port, "--dashboard-port")
    if gateway is not None:
        addresses.check_port(gateway.port, "--gateway-port")
        addresses.check_port(gateway.grpc_port, "--gateway-grpc-port")
    config = flags.config(hub_port=port, hub_store_path=store, include_dashboard=dashboard.include,
                          dashboard_host=dashboard.host, dashboard_port=dashboard.port)
    tls = load_tls(config)
    given = given_token(config)
    cluster = start_head(config, started_by="head")
    target = Target(cluster.hub_address, cluster.session.token, cluster.session, tls)
    try:
        node = _wait_for_new_node(target, set(), cluster.processes[:2], config.connect_timeout_s)
        url = wait_for_dashboard(cluster.session, cluster.processes[2], config.connect_timeout_s) \
            if config.include_dashboard else None
        gateway_at = None
        if gateway is not None:
            cluster.processes.append(start_gateway(config, cluster, gateway.port, gateway.grpc_port, gateway.host))
            gateway_at = wait_for_gateway(cluster.session, cluster.processes[-1], config.connect_timeout_s)
    except BaseException:
        stop_session(cluster.session, timeout=5.0, tls=tls)
        raise
    address = cluster.hub_address
    token_file = given.path if given is not None and given.path is not None else cluster.session.path / TOKEN_FILE
    print(f"Started an actorhub cluster (hub and one node with {cpu_count_words(node.num_cpus)}).")
    print(f"  hub address:  {address}")
    print(f"  session dir:  {cluster.session.path}")
    print(f"  token file:   {token_file}")
    if config.hub_store_path is not None:
        print(f"  hub store:    {config.hub_store_path}")
    if url is not None:
        print(f"  dashboard:    {url}   (Job API: actorhub job submit -- CMD)")
    if gateway_at is not None:
        print(f"  gateway:      http://{gateway_at['http']}   gRPC {gateway_at['grpc']}   (named typed actors)")
    print(f"  node id:      {node.node_id}")
    print()
    tls_flags = _tls_flags(config)
    if addresses.is_loopback(address.rpartition(":")[0]):
        print("The hub listens on loopback: only this machine reaches it. To let other machines join,")
        print("start it with --node-ip-address set to an address of this machine that they reach.")
    print("To add a node from another machine (copy the token file there first, mode 0600):")
    print(f"  actorhub start --address {address} --token-file {token_file}{tls_flags}")
    print("To connect a program from another machine, with ACTORHUB_TOKEN set to the token in that file:")
    print(f'  actorhub.init(address="{address}")')
    print("To connect a program on this machine:")
    print('  actorhub.init()    # or address="auto"')
    print("To see the cluster:")
    print("  actorhub status")
    print("To stop it:")
    print("  actorhub stop", flush=True)
    if flags.block:
        return _block(cluster.processes, lambda: stop_session(cluster.session, tls=tls))
    # The processes are left running on purpose: they are in their own session and the hub
    # (restarted by its supervisor if it crashes) owns their lifetime from here on.
    return 0


def _tls_flags(config: Config) -> str:
    if config.tls_cert is None:
        return ""
    return " --tls-cert CERT --tls-key KEY --tls-ca CA"


def start_node_command(address: str, flags: StartFlags) -> int:
    config = flags.config()
    host, port = addresses.parse_address(address, "--address")
    ip = addresses.resolve(host, f"--address {address}")
    tls = load_tls(config)
    given = given_token(config)
    root = config.session_root
    local = session_for_address(root, address) or (session_for_address(root, f"{ip}:{port}") if ip != host else None)
    if local is not None and not local.joined and (given is None or given.token == local.token):
        # The head runs on this host: the node joins its session, and stops with it.
        return _add_local_node(config, local, flags.block)
    if given is not None:
        token, source = given.token, given.source
    elif local is not None:
        token, source = local.token, f"the token of session {local.path}"
    else:
        raise CliError(f"no local session for {address} and no token: to join a hub on another machine, pass "
                       "--token-file FILE or set ACTORHUB_TOKEN to the cluster's token")
    target = Target(address, token, None, tls, source)
    # Before anything starts here: the hub must agree on TLS, answer and take the token.
    check_tls(host, port, tls)
    known = {n.node_id for n in _wait_for_hub(target, config.connect_timeout_s).nodes}
    session, node_process = join_cluster(config, address, token)
    target = Target(address, token, session, tls, source)
    node = _wait_or_kill(target, known, node_process, config.connect_timeout_s)
    make_latest(session)
    print(f"Started node {node.node_id} with {cpu_count_words(node.num_cpus)} at {node.address}, joined to the hub "
          f"at {address}.")
    print(f"  session dir:  {session.path}")
    print("To stop it (only this machine's processes): actorhub stop", flush=True)
    if flags.block:
        return _block([node_process], lambda: stop_session(session, tls=tls))
    return 0


def _add_local_node(config: Config, session: Session, block: bool) -> int:
    address = session.hub_address
    target = Target(address, session.token, session, load_tls(config))
    with HubClient(target) as hub:
        known = {n.node_id for n in hub.status().nodes}
    node_process = start_node(config, session, address)
    node = _wait_or_kill(target, known, node_process, config.connect_timeout_s)
    print(f"Started node {node.node_id} with {cpu_count_words(node.num_cpus)}, joined to the hub at {address}.",
          flush=True)
    if block:
        return _block([node_process], lambda: _stop_node_process(node_process))
    return 0


def _wait_or_kill(
    target: Target, known: set[str], node_process: subprocess.Popen[bytes], timeout: float
) -> NodeStatus:
    try:
        return _wait_for_new_node(target, known, [node_process], timeout)
    except BaseException:
        # The agent leads its own process group, with its zygote; workers die with the zygote.
        with contextlib.suppress(OSError):
            os.killpg(node_process.pid, signal.SIGKILL)
        node_process.wait()
        if target.session is not None and target.session.joined:
            (target.session.path / ADDRESS_FILE).unlink(missing_ok=True)
            remove_segments(target.session)
        raise


def _wait_for_hub(target: Target, timeout: float) -> ClusterStatus:
    """The hub's status, once it answers (a node may start before its head); a refused token
    fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with HubClient(target) as hub:
                return hub.status()
        except HubUnreachableError:
            if time.monotonic() >= deadline:
                raise CliError(f"no hub answers at {target.address} (waited {timeout:g} s); check the address and "
                               "that the head runs") from None
            time.sleep(_HUB_RETRY_S)


def _block(processes: list[subprocess.Popen[bytes]], stop: Callable[[], None]) -> int:
    """Stay in the foreground until SIGTERM or SIGINT (then `stop`, exit 0) or until the
    processes end by themselves (the cluster was stopped: 0; one of them failed: 1)."""
    wake = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not wake.wait(0.2):
        ended = [p for p in processes if p.poll() is not None]
        if ended:
            failed = [p for p in ended if p.returncode != 0]
            for p in failed:
                print(f"actorhub start: process {p.pid} ({_role(p)}) exited with code {p.returncode}; stopping",
                      file=sys.stderr, flush=True)
            stop()
            stop_processes(processes, 5.0)
            return 1 if failed else 0
    print(f"Received {signal.Signals(signals[0]).name}: stopping.", flush=True)
    stop()
    stop_processes(processes, 5.0)
    return 0


def _role(proc: subprocess.Popen[bytes]) -> str:
    args = [str(a) for a in proc.args] if isinstance(proc.args, list | tuple) else []
    return next((a for a in args if a.startswith("actorhub.")), "a cluster process")


def _stop_node_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    stop_processes([proc], 10.0)


def _wait_for_new_node(
    target: Target, known: set[str], processes: list[subprocess.Popen[bytes]], timeout: float
) -> NodeStatus:
    """The first alive node not in `known`; fails fast when one of `processes` exits."""
    deadline = time.monotonic() + timeout
    logs = target.session.logs if target.session is not None else None
    with HubClient(target) as hub:
        while True:
            for proc in processes:
                # poll() only looks; the processes must keep running after this command exits.
                if proc.poll() is not None:
                    raise CliError(f"a cluster process exited with code {proc.returncode}{_last_words(proc, logs)}; "
                                   f"see the logs in {logs}")
            fresh = [n for n in hub.status().nodes if n.alive and n.node_id not in known]
            if fresh:
                return fresh[0]
            if time.monotonic() > deadline:
                raise CliError(f"no node registered with the hub at {target.address} within {timeout:g} s; "
                               f"see the logs in {logs}")
            time.sleep(_POLL_S)


def stop_command() -> int:
    config = Config.load()
    root = config.session_root
    tls = load_tls(config)
    found, refused = list_sessions(root)  # an unsafe root raises: nothing under it is touched
    for err in refused:
        print(f"Skipped: {err}", file=sys.stderr)
    stopped = 0
    for session in found:
        live = live_pids(session)
        if not live:
            stopped += _clean_dead_session(session)
            continue
        address = _recorded_address(session)
        joined = session.joined
        stop_session(session, tls=tls)
        stopped += 1
        if address is not None and joined:
            print(f"Stopped this machine's node of the cluster at {address} (session {session.path}).")
        elif address is not None:
            print(f"Stopped the cluster at {address} (session {session.path}).")
        else:
            print(f"Stopped {len(live)} leftover process(es) of session {session.path}.")
    if not stopped:
        print("No running cluster.")
    return 0


def _last_words(proc: subprocess.Popen[bytes], logs: Path | None) -> str:
    """": " and the last line of a node agent's output (a refusal, say), or "" without one."""
    args = [str(a) for a in proc.args] if isinstance(proc.args, list | tuple) else []
    if logs is None or "--node-id" not in args:
        return ""
    try:
        lines = (logs / f"node-{args[args.index('--node-id') + 1]}.out").read_text(errors="replace").splitlines()
    except (OSError, IndexError):
        return ""
    return f": {lines[-1].strip()}" if lines else ""


def _clean_dead_session(session: Session) -> int:
    """Sweep up after a session whose processes all died (SIGKILL, a crash, the OOM killer):
    its /dev/shm arenas would otherwise stay until reboot, and its hub address would send
    `init()` to a cluster that is gone. 1 when there was something to remove."""
    address = _recorded_address(session)
    # Looked for first: reading every process's command line is the costly part.
    if address is None and not leftovers(session):
        return 0
    if processes_naming(session):
        return 0  # starting (no pid file yet) or a process we cannot see in the pid files
    removed, spill_files = remove_segments(session)
    what = [str(p) for p in removed] + ([f"{spill_files} spill file(s)"] if spill_files else [])
    if address is not None:
        (session.path / ADDRESS_FILE).unlink(missing_ok=True)
        what.append(f"the address file of its cluster at {address}")
    if not what:
        return 0
    print(f"Cleaned up session {session.path}, whose processes are all gone: removed {', '.join(what)}.")
    return 1


def _recorded_address(session: Session) -> str | None:
    try:
        return (session.path / ADDRESS_FILE).read_text().strip() or None
    except OSError:
        return None
