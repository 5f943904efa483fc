"""`actorhub up cluster.yaml` and `actorhub down cluster.yaml`: Ray's `ray up` / `ray down`, local.

`up` checks the YAML (`autoscaler/config.py`), starts a head declaring the head node type's
resources (as `actorhub start --head` would), leaves the checked config in the session
(`autoscaler.json`) and starts the autoscaler (`python -m actorhub.autoscaler`), which launches
and stops worker nodes from then on. A cluster of that name already running is refused.

`down` finds the running cluster of that name on this machine and stops its autoscaler first
(so that nothing is launched meanwhile), then the cluster (`launcher.stop_session`: the hub stops
every node), then any node the autoscaler started that had not registered yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from actorhub.autoscaler.autoscaler import PID_ROLE, STATUS_FILE, describe
from actorhub.autoscaler.config import CONFIG_FILE, ClusterConfig, load_cluster_config
from actorhub.autoscaler.local_provider import STATE_FILE
from actorhub.cli.cluster import _wait_for_new_node
from actorhub.cli.common import CliError, Target, cpu_count_words, live_pids
from actorhub.cluster.launcher import start_autoscaler, start_head, stop_session
from actorhub.cluster.session import Session, list_sessions
from actorhub.config import Config
from actorhub.wire.tls import load_tls

_AUTOSCALER_STOP_S = 10.0


def up_command(path: Path) -> int:
    cluster = load_cluster_config(path)
    base = Config.load()
    running = _running(base.session_root, cluster.cluster_name)
    if running:
        raise CliError(f"a cluster named {cluster.cluster_name!r} already runs (session {running[0].path}); "
                       f"stop it first with `actorhub down {path}`")
    config = _head_config(cluster)
    tls = load_tls(config)
    processes = start_head(config, started_by="head")
    session = processes.session
    try:
        target = Target(processes.hub_address, session.token, session, tls)
        head = _wait_for_new_node(target, set(), processes.processes, config.connect_timeout_s)
        (session.path / CONFIG_FILE).write_text(cluster.model_dump_json(indent=1))
        autoscaler = start_autoscaler(config, session)
        _wait_for_pid_file(session, autoscaler, config.connect_timeout_s)
    except BaseException:
        stop_session(session, timeout=5.0, tls=tls)
        raise
    print(f"Started cluster {cluster.cluster_name!r}: a head with {cpu_count_words(head.num_cpus)} "
          f"and an autoscaler (pid {autoscaler.pid}).")
    print(f"  hub address:  {processes.hub_address}")
    print(f"  session dir:  {session.path}")
    print(f"  autoscaler:   {session.logs / 'autoscaler.out'}")
    types = ", ".join(f"{name} (max {cluster.max_of(name)})" for name in cluster.worker_types()
                      if cluster.max_of(name) > 0)
    print(f"  worker types: {types or 'none'}; at most {cluster.max_workers} workers, removed after "
          f"{cluster.idle_timeout_minutes:g} idle minutes")
    print("Programs on this machine join it with actorhub.init(); stop it with:")
    print(f"  actorhub down {path}", flush=True)
    return 0


def down_command(path: Path) -> int:
    cluster = load_cluster_config(path)
    config = Config.load()
    tls = load_tls(config)
    sessions = _running(config.session_root, cluster.cluster_name)
    if not sessions:
        print(f"No running cluster named {cluster.cluster_name!r}.")
        return 0
    for session in sessions:
        _stop_autoscaler(session)
        stop_session(session, tls=tls)
        _stop_leftover_nodes(session)
        print(f"Stopped cluster {cluster.cluster_name!r} (session {session.path}).")
    return 0


def autoscaler_lines(session: Session) -> list[str]:
    """What `actorhub status` prints of the autoscaler's last round; none for another cluster."""
    try:
        status = json.loads((session.path / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return []
    nodes: dict[str, str] = status.get("nodes", {})
    by_type = Counter(nodes.values())
    lines = ["", f"Autoscaler: {len(nodes)} worker(s)" + (" (" + ", ".join(
        f"{count} {name}" for name, count in sorted(by_type.items())) + ")" if by_type else "")
        + f", {len(status.get('starting', []))} starting, {len(status.get('stopping', []))} stopping"]
    for what, key in (("infeasible (no node type fits)", "infeasible"),
                      ("waiting (max_workers reached)", "waiting")):
        if status.get(key):
            lines.append(f"  {what}: " + ", ".join(describe(shape) for shape in status[key]))
    return lines


def _head_config(cluster: ClusterConfig) -> Config:
    head = cluster.available_node_types[cluster.head_node_type]
    vector = head.vector()
    return Config.load(
        num_cpus=vector["CPU"], num_gpus=int(vector.get("GPU", 0)) or None, resources=head.custom() or None,
        memory=int(vector["memory"]) if "memory" in vector else None,
        object_store_memory=head.node_config.object_store_memory, prestart_workers=head.node_config.prestart_workers,
    )


def _wait_for_pid_file(session: Session, autoscaler: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the autoscaler is up (its pid file written); its log's end if it exits first."""
    deadline = time.monotonic() + timeout
    while not session.pid_file(PID_ROLE).exists():
        if autoscaler.poll() is not None:
            log = session.logs / "autoscaler.out"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise CliError(f"the autoscaler exited with code {autoscaler.returncode}: " + " / ".join(tail))
        if time.monotonic() > deadline:
            raise CliError(f"the autoscaler did not start within {timeout:g} s; see {session.logs / 'autoscaler.out'}")
        time.sleep(0.02)


def _running(root: Path, name: str) -> list[Session]:
    """Sessions on this machine of a cluster from `actorhub up` named `name`, still running."""
    found, _ = list_sessions(root)
    matching = []
    for session in found:
        try:
            saved = json.loads((session.path / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and saved.get("cluster_name") == name and live_pids(session):
            matching.append(session)
    return matching


def _stop_autoscaler(session: Session) -> None:
    pid = _pid_of(session.pid_file(PID_ROLE), b"actorhub.autoscaler")
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _AUTOSCALER_STOP_S
    while _pid_of(session.pid_file(PID_ROLE), b"actorhub.autoscaler") == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        if _command_line(pid).find(b"actorhub.autoscaler") >= 0:
            os.kill(pid, signal.SIGKILL)


def _stop_leftover_nodes(session: Session) -> None:
    """Nodes the autoscaler launched that never registered: the hub could not stop them."""
    try:
        nodes = json.loads((session.path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return
    pids = [int(entry.get("pid", 0)) for node_id, entry in nodes.items()
            if f"--node-id\0{node_id}".encode() in _command_line(int(entry.get("pid", 0)))]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def _pid_of(pid_file: Path, needle: bytes) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if needle in _command_line(pid) else None


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
