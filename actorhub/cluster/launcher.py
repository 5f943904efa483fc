"""Starting and stopping cluster processes: the hub (under its supervisor) and node agents.

Processes start each other by module path (`python -m ...`), never by import, so the kernel
does not depend on the hub's code. Each runs in its own session (process group) so a Ctrl-C
aimed at the driver does not reach them; the hub ends a cluster owned by a driver when that
driver's job lease breaks, which covers a driver killed by SIGKILL.

The launcher starts the hub's supervisor (`actorhub.hub.supervisor`), which starts the hub in
the supervisor's process group and restarts it when it crashes; the hub dies with it. So the
process the launcher holds for the hub is the supervisor, and killing its group stops both.

Starting is on the path of every `init()`, so this module imports no gRPC (that waits for
`request_shutdown`) and spawns before it waits: the node agent first (it spawns the zygote,
the longest boot, at once), then the hub's supervisor, which starts the hub; the node agent
retries until the hub answers.
`start_head(wait=False)` returns as soon as both are spawned, so that the driver can import
its own kernel while they boot, and `wait_for_head` waits for the hub afterwards.

Every process of a host binds and advertises one address (`addresses.node_host`), passed to
each as --bind-host and ACTORHUB_NODE_IP_ADDRESS. A node joining a hub on another host
(`join_cluster`) gets a session directory of its own holding the token it was given and the
hub's address; nothing else is shared between hosts. Children get the TLS files as absolute
ACTORHUB_TLS_* paths, and the token through the session's token file only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from actorhub.cluster import addresses
from actorhub.cluster.credentials import given_token
from actorhub.cluster.session import ADDRESS_FILE, TOKEN_FILE, Session, check_private, create_session, make_latest
from actorhub.config import Config, RpcDeadlines
from actorhub.exceptions import ActorHubSystemError
from actorhub.object_store import shm as _shm
from actorhub.runtime.ids import new_id

if TYPE_CHECKING:
    from actorhub.wire.tls import TlsCredentials  # imports gRPC, which starting must not wait for


class ClusterStartError(ActorHubSystemError):
    """A cluster process failed to start; the message carries the end of its log."""


SUPERVISOR_MODULE = "actorhub.hub.supervisor"
# The supervisor imports the standard library only: run as a file with -I -S (no site, so no
# site-packages or editable-install hooks) it spawns the hub, on the path of every init(),
# about 20 ms after it starts rather than 40.
_SUPERVISOR_FILE = Path(__file__).resolve().parent.parent / "hub" / "supervisor.py"
SUPERVISOR_LOG = "hub-supervisor.log"
HUB_OUT = "hub.out"
SUPERVISOR_ROLE = "hub-supervisor"  # its pid file: hub-supervisor.pid
DASHBOARD_OUT = "dashboard.out"
DASHBOARD_ADDRESS_FILE = "dashboard_address"
DEFAULT_DASHBOARD_PORT = 8265
GATEWAY_OUT = "gateway.out"
GATEWAY_ADDRESS_FILE = "gateway_address"  # written by actorhub/gateway/server.py
DASHBOARD_PORT_RETRIES = 50


@dataclass
class ClusterProcesses:
    session: Session
    hub_address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """[hub supervisor, node agent], then the dashboard's supervisor when it runs"""
    node_id: str = ""  # of the node agent started with the hub


def _free_port(host: str) -> int:
    """A port free now, for the hub to bind soon after, outside the kernel's ephemeral range
    when there is room: a port-0 bind or an outgoing connection (of any process here, the
    cluster's own starting at the same time) can take an ephemeral one in between."""
    low, high = _ephemeral_range()
    ranges = [r for r in ((high + 1, 65535), (10000, low - 1)) if r[0] <= r[1]]
    for _ in range(32 if ranges else 0):
        start, end = random.choice(ranges)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, random.randint(start, end)))
            except OSError:
                continue
            port: int = s.getsockname()[1]
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
        return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def child_env(config: Config, session: Session, host: str) -> dict[str, str]:
    """The environment of a cluster process: ours, with this host's address, the TLS files as
    absolute paths (a child's working directory need not be ours) and the token as the
    session's file, not its value (every process of the session reads it from there)."""
    env = dict(os.environ)
    env.pop("ACTORHUB_TOKEN", None)
    env["ACTORHUB_TOKEN_FILE"] = str(session.path / TOKEN_FILE)
    env["ACTORHUB_NODE_IP_ADDRESS"] = host
    for name in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(config, name)
        if path is not None:
            env[f"ACTORHUB_{name.upper()}"] = os.path.abspath(Path(path).expanduser())
    if config.tracing_startup_hook:  # given to init() (`_tracing_startup_hook`), for every worker
        env["ACTORHUB_TRACING_STARTUP_HOOK"] = config.tracing_startup_hook
    if config.otlp_endpoint:
        env["ACTORHUB_OTLP_ENDPOINT"] = config.otlp_endpoint
    if config.enable_object_reconstruction:  # the hub tells every process of the cluster (tasks/lineage.py)
        env["ACTORHUB_ENABLE_OBJECT_RECONSTRUCTION"] = "1"
    return env


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_head(config: Config, *, wait: bool = True, started_by: str | None = None) -> ClusterProcesses:
    """A new session with a hub and one node agent; returns once the hub is serving, or with
    `wait=False` once both are spawned (then `wait_for_head` before using the hub).

    The session holds ACTORHUB_TOKEN or the token file's token when one is given, else a new
    one. `started_by="head"` marks a cluster of `actorhub start`, which `init()` looks for.
    """
    # Before anything is made: a bad address or token file leaves nothing behind.
    host = addresses.node_host(config)
    given = given_token(config)
    if given is None:
        session = create_session(config.session_root)
    else:
        session = create_session(config.session_root, given.token)
    if started_by is not None:
        session.mark_started(started_by)
    node_id = new_id(8)
    # Before any process starts, so that a refusal leaves nothing behind.
    check_segment_dir(session, node_id)
    port = config.hub_port or _free_port(host)
    hub_address = f"{host}:{port}"
    env = child_env(config, session, host)
    # The node agent first: its zygote's boot (interpreter, gRPC, the worker module) is the
    # longest on the way to a first actor. It retries until the hub answers.
    node = start_node(config, session, hub_address, node_id, host=host, head=True)
    store = ["--store", str(config.hub_store_path)] if config.hub_store_path is not None else []
    try:
        # Its own output (a traceback, a refused flag) goes to the log it writes its lines to.
        supervisor = _spawn(
            [*_supervisor_argv(), "--session-dir", str(session.path), "--port", str(port), "--bind-host", host,
             *store],
            session.logs / SUPERVISOR_LOG,
            env,
        )
    except BaseException:
        node.kill()
        node.wait()
        raise
    cluster = ClusterProcesses(session, hub_address, [supervisor, node], node_id)
    if config.include_dashboard:
        cluster.processes.append(start_dashboard(config, session, hub_address, supervisor.pid, env, node_id))
    if wait:
        wait_for_head(cluster, config)
    return cluster


def _supervisor_argv() -> list[str]:
    """The interpreter flags and program of the hub's supervisor (after sys.executable)."""
    if _SUPERVISOR_FILE.is_file():
        return ["-I", "-S", str(_SUPERVISOR_FILE)]
    return ["-m", SUPERVISOR_MODULE]  # not installed as files (a zip): as a module, with site


def wait_for_head(cluster: ClusterProcesses, config: Config) -> None:
    """Return once the hub of a cluster from `start_head` serves; on failure stop the cluster
    and raise ClusterStartError with the end of the failed process's log."""
    session = cluster.session
    node_log = session.logs / f"node-{cluster.node_id}.out"
    supervisor, node = cluster.processes[:2]
    deadline = time.monotonic() + config.connect_timeout_s
    pause = 0.001  # the hub is usually up by the time a driver asks: look often, then less
    while not (session.path / ADDRESS_FILE).exists():
        if supervisor.poll() is not None:
            _abort(cluster)
            raise ClusterStartError(f"the hub supervisor exited with code {supervisor.returncode}:\n"
                                    f"{_hub_logs(session)}")
        if node.poll() is not None:
            _abort(cluster)
            raise ClusterStartError(f"the node agent exited with code {node.returncode}:\n{_tail(node_log)}")
        if time.monotonic() > deadline:
            _abort(cluster)
            raise ClusterStartError(f"the hub did not start within {config.connect_timeout_s} s:\n{_hub_logs(session)}")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
    make_latest(session)


def start_dashboard(
    config: Config, session: Session, hub_address: str, hub_supervisor_pid: int, env: dict[str, str], node_id: str,
) -> subprocess.Popen[bytes]:
    """The dashboard's supervisor (`actorhub.dashboard`), which serves the Job API and ends when
    the hub's supervisor has; `wait_for_dashboard` says where it listens."""
    port = config.dashboard_port if config.dashboard_port is not None else DEFAULT_DASHBOARD_PORT
    # As Ray: the default port gives way to the next free one; a port asked for is that port.
    retries = DASHBOARD_PORT_RETRIES if config.dashboard_port is None else 0
    (session.path / DASHBOARD_ADDRESS_FILE).unlink(missing_ok=True)
    return _spawn(
        ["-m", "actorhub.dashboard", "--session-dir", str(session.path), "--hub-address", hub_address,
         "--host", config.dashboard_host, "--port", str(port), "--port-retries", str(retries),
         "--hub-supervisor-pid", str(hub_supervisor_pid), "--node-id", node_id],
        session.logs / DASHBOARD_OUT,
        env,
    )


def wait_for_dashboard(session: Session, dashboard: subprocess.Popen[bytes], timeout: float) -> str:
    """The dashboard's URL once it serves; ClusterStartError with its output when it failed."""
    written = _wait_for_address_file("the dashboard", dashboard, session.path / DASHBOARD_ADDRESS_FILE,
                                     session.logs / DASHBOARD_OUT, timeout)
    return f"http://{written.strip()}"


def _wait_for_address_file(what: str, process: subprocess.Popen[bytes], address_file: Path, output: Path,
                           timeout: float) -> str:
    """What a process that serves writes to its address file once it does; ClusterStartError,
    with the end of its output, if it exits or takes longer than `timeout` first."""
    deadline = time.monotonic() + timeout
    while not address_file.exists():
        if process.poll() is not None:
            raise ClusterStartError(f"{what} exited with code {process.returncode}:\n{_tail(output, 5)}")
        if time.monotonic() > deadline:
            raise ClusterStartError(f"{what} did not start within {timeout:g} s:\n{_tail(output, 5)}")
        time.sleep(0.02)
    return address_file.read_text()


def start_gateway(
    config: Config, cluster: ClusterProcesses, port: int, grpc_port: int = 0, host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """The gateway (`actorhub.gateway`: named typed actors over HTTP and gRPC) of a head's
    cluster, which ends when the hub's supervisor has; `wait_for_gateway` says where it listens."""
    session = cluster.session
    (session.path / GATEWAY_ADDRESS_FILE).unlink(missing_ok=True)
    env = child_env(config, session, addresses.node_host(config))
    return _spawn(
        ["-m", "actorhub.gateway", "--address", cluster.hub_address, "--host", host, "--port", str(port),
         "--grpc-port", str(grpc_port), "--session-dir", str(session.path),
         "--hub-supervisor-pid", str(cluster.processes[0].pid)],
        session.logs / GATEWAY_OUT,
        env,
    )


def wait_for_gateway(session: Session, gateway: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    """The gateway's addresses ({"http": "host:port", "grpc": "host:port"}) once it serves;
    ClusterStartError with its output when it failed."""
    found: dict[str, str] = json.loads(_wait_for_address_file(
        "the gateway", gateway, session.path / GATEWAY_ADDRESS_FILE, session.logs / GATEWAY_OUT, timeout))
    return found


def _hub_logs(session: Session) -> str:
    """The ends of the supervisor's log (why it gave up) and of the hub's output (why it failed)."""
    return (f"{session.logs / SUPERVISOR_LOG}:\n{_tail(session.logs / SUPERVISOR_LOG, 10)}\n"
            f"{session.logs / HUB_OUT}:\n{_tail(session.logs / HUB_OUT)}")


def abort_start(cluster: ClusterProcesses) -> None:
    """Stop a cluster whose start was given up (the driver failed before using it)."""
    for proc in cluster.processes:
        if proc.poll() is None:
            _kill_group(proc)
    _abort(cluster)


def _abort(cluster: ClusterProcesses) -> None:
    """Stop a cluster that failed to start, and its node's arena: nobody else will."""
    stop_processes(cluster.processes, 1.0)
    remove_segments(cluster.session)


def check_segment_dir(session: Session, node_id: str) -> None:
    """Refuse a node whose /dev/shm directory already exists and is not ours and private.

    The node agent refuses it too, when it makes the directory; checking here first makes the
    start fail at once with that error, rather than a driver waiting for a node that never
    registers.
    """
    with contextlib.suppress(FileNotFoundError):
        check_private(_shm.segment_root() / f"actorhub-{_shm.segments_name(session.path, node_id)}",
                      "shared-memory directory")


def start_node(
    config: Config, session: Session, hub_address: str, node_id: str | None = None, *, host: str | None = None,
    head: bool = False,
) -> subprocess.Popen[bytes]:
    """A node agent in `session` for the hub at `hub_address`, serving at `host` (default: the
    address `addresses.node_host` picks for a node joining that hub); `head`: the hub's own node."""
    if host is None:
        host = addresses.node_host(config, addresses.parse_address(hub_address, "the hub's address")[0])
    node_id = node_id or new_id(8)
    check_segment_dir(session, node_id)
    num_cpus = config.num_cpus if config.num_cpus is not None else float(os.cpu_count() or 1)
    return _spawn(
        [
            "-m", "actorhub.node",
            "--session-dir", str(session.path),
            "--hub-address", hub_address,
            "--node-id", node_id,
            "--num-cpus", str(num_cpus),
            *(["--num-gpus", str(config.num_gpus)] if config.num_gpus else []),
            *(["--memory", str(config.memory)] if config.memory is not None else []),
            *(["--resources", json.dumps(config.resources)] if config.resources else []),
            "--prestart", str(config.prestart_workers),
            "--bind-host", host,
            *(["--head"] if head else []),
            *(["--object-store-memory", str(config.object_store_memory)] if config.object_store_memory else []),
            *(["--metrics-export-port", str(config.metrics_export_port)] if config.metrics_export_port else []),
        ],
        session.logs / f"node-{node_id}.out",
        child_env(config, session, host),
    )


def start_autoscaler(config: Config, session: Session) -> subprocess.Popen[bytes]:
    """The autoscaler of a cluster from `actorhub up` (`python -m actorhub.autoscaler`), which
    reads its cluster config from the session and logs to `logs/autoscaler.out`."""
    host = addresses.node_host(config)
    return _spawn(["-m", "actorhub.autoscaler", "--session-dir", str(session.path)],
                  session.logs / "autoscaler.out", child_env(config, session, host))


def join_cluster(config: Config, hub_address: str, token: str) -> tuple[Session, subprocess.Popen[bytes]]:
    """A node agent for the hub at `hub_address` on another host, in a session of its own.

    The session holds `token` and the hub's address (so `init()`, `actorhub status` and
    `actorhub stop` on this host find it) and is marked as a joined node: stopping it stops
    only this host's processes. The caller waits for the node to register, then makes it
    `latest`.
    """
    hub_host, _ = addresses.parse_address(hub_address, "--address")
    host = addresses.node_host(config, addresses.resolve(hub_host, f"--address {hub_address}"))
    session = create_session(config.session_root, token)
    session.mark_started("node")
    session.write_hub_address(hub_address)
    return session, start_node(config, session, hub_address, host=host)


def request_shutdown(hub_address: str, token: str, timeout: float = 10.0, tls: TlsCredentials | None = None) -> bool:
    """Ask the hub to stop the cluster; False when it did not answer. `tls`: the caller's
    credentials when the cluster uses TLS (wire/tls.py)."""
    from actorhub.wire.hub import HubClient
    from actorhub.wire.transport import ChannelPool

    channels = ChannelPool(token, tls=tls)
    try:
        return HubClient(channels, hub_address, RpcDeadlines()).shutdown_cluster(timeout)
    finally:
        channels.close()


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for processes this process started to exit; kill what is left at the deadline."""
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started and its process group: the hub supervisor's holds the hub,
    a node agent's its zygote. Only while it is unreaped, so its pid is still its own."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def leftovers(session: Session) -> bool:
    """Whether the session has /dev/shm directories or spill files (cheap: two globs)."""
    shm_dirs = _shm.segment_root().glob(f"actorhub-{_shm.segments_name(session.path, '*')}")
    return any(shm_dirs) or any(session.path.glob("spill-*/*"))


def remove_segments(session: Session) -> tuple[list[Path], int]:
    """Remove the session's /dev/shm directories and spill files, once its nodes are gone.

    Returns the /dev/shm directories removed and the number of spill files. Directories that
    fail the ownership check are left alone.
    """
    from actorhub.object_store.service import remove_session_segments

    removed = remove_session_segments(session.path)
    spill_files = 0
    for spill_dir in session.path.glob("spill-*"):
        try:
            check_private(spill_dir, "spill directory")
            spill_files += sum(1 for _ in spill_dir.iterdir())
        except OSError:  # UnsafeDirectoryError included: not ours to delete
            continue
        shutil.rmtree(spill_dir, ignore_errors=True)
    return removed, spill_files


def session_pids(session: Session) -> list[int]:
    """The pids in the session's pid files (hub, hub supervisor, node agents)."""
    return [pid for pid_file in session.path.glob("*.pid") if (pid := _pid_in(pid_file)) is not None]


def live_roles(session: Session) -> set[str]:
    """The roles ("hub", "hub-supervisor", "node-<id>") whose pid file names a live process of
    ours (a pid file outlives a killed process, whose pid may since be another program's)."""
    return {f.stem for f in session.path.glob("*.pid") if (pid := _pid_in(f)) is not None and _is_ours(pid)}


def _pid_in(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_ours(pid: int) -> bool:
    try:
        return b"actorhub" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_session(session: Session, timeout: float = 10.0, tls: TlsCredentials | None = None) -> None:
    """Stop a cluster we did not start in this process: ask the hub, then kill what remains.

    The hub stops the cluster and exits 0, and then its supervisor does. When the hub does not
    answer (it is restarting, or it is gone) every process is asked to stop with SIGTERM, the
    supervisor first, so that it does not bring the hub back meanwhile.

    A joined node's session (its hub is on another host) stops only this host's processes:
    SIGTERM, so the node agent leaves the cluster as a node does, and its hub address goes,
    so that `init()` here no longer finds the cluster through it.
    """
    # Read first: each process removes its pid file as it exits.
    supervisor = _pid_in(session.pid_file(SUPERVISOR_ROLE))
    pids = sorted((p for p in session_pids(session) if _is_ours(p)), key=lambda p: p != supervisor)
    if session.joined:
        answered = False
        (session.path / ADDRESS_FILE).unlink(missing_ok=True)
    else:
        try:
            answered = request_shutdown(session.hub_address, session.token, timeout, tls)
        except OSError:
            answered = False
    if not answered:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _is_ours(p)]
        time.sleep(0.05)
    for pid in pids:
        try:
            # A node agent's process group holds its zygote (workers die with the zygote), the
            # hub supervisor's holds the hub.
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    remove_segments(session)
