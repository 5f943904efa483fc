"""`actorhub start` and `actorhub stop`: clusters that outlive the command that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from actorhub.cli.common import CliError, HubClient, Target, cpu_count_words, live_pids, processes_naming
from actorhub.cluster.launcher import leftovers, remove_segments, start_head, start_node, stop_session
from actorhub.cluster.session import ADDRESS_FILE, Session, list_sessions, session_for_address
from actorhub.config import Config
from actorhub.wire.records import NodeStatus

_POLL_S = 0.02


def start_head_command(port: int | None, num_cpus: float | None, store: Path | None = None) -> int:
    config = Config.load(hub_port=port, num_cpus=num_cpus, hub_store_path=store)
    cluster = start_head(config)
    target = Target(cluster.hub_address, cluster.session.token, cluster.session)
    try:
        node = _wait_for_new_node(target, set(), cluster.processes, config.connect_timeout_s)
    except BaseException:
        stop_session(cluster.session, timeout=5.0)
        raise
    address = cluster.hub_address
    print(f"Started an actorhub cluster (hub and one node with {cpu_count_words(node.num_cpus)}).")
    print(f"  hub address:  {address}")
    print(f"  session dir:  {cluster.session.path}")
    if config.hub_store_path is not None:
        print(f"  hub store:    {config.hub_store_path}")
    print(f"  node id:      {node.node_id}")
    print()
    print("To connect a program on this machine, call one of:")
    print('  actorhub.init(address="auto")')
    print(f'  actorhub.init(address="{address}")')
    print("To add a node agent on this machine:")
    print(f"  actorhub start --address {address}")
    print("To see the cluster:")
    print("  actorhub status")
    print("To stop it:")
    print("  actorhub stop")
    # The processes are left running on purpose: they are in their own session and the hub
    # (restarted by its supervisor if it crashes) owns their lifetime from here on.
    return 0


def start_node_command(address: str, num_cpus: float | None) -> int:
    config = Config.load(num_cpus=num_cpus)
    session = session_for_address(config.session_root, address)
    if session is None:
        raise CliError(f"no local session for {address}; start the hub on this machine with `actorhub start --head`")
    target = Target(address, session.token, session)
    with HubClient(target) as hub:
        known = {n.node_id for n in hub.status().nodes}
    node_process = start_node(config, session, address)
    try:
        node = _wait_for_new_node(target, known, [node_process], config.connect_timeout_s)
    except BaseException:
        # The agent leads its own process group, with its zygote; workers die with the zygote.
        with contextlib.suppress(OSError):
            os.killpg(node_process.pid, signal.SIGKILL)
        node_process.wait()
        raise
    print(f"Started node {node.node_id} with {cpu_count_words(node.num_cpus)}, joined to the hub at {address}.")
    return 0


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
    root = Config.load().session_root
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
        stop_session(session)
        stopped += 1
        if address is not None:
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
    its /dev/shm arenas would otherwise stay until reboot. 1 when there was something to remove."""
    # Looked for first: reading every process's command line is the costly part.
    if not leftovers(session):
        return 0
    if processes_naming(session):
        return 0  # starting (no pid file yet) or a process we cannot see in the pid files
    removed, spill_files = remove_segments(session)
    if not removed and not spill_files:
        return 0
    what = [str(p) for p in removed] + ([f"{spill_files} spill file(s)"] if spill_files else [])
    print(f"Cleaned up session {session.path}, whose processes are all gone: removed {', '.join(what)}.")
    return 1


def _recorded_address(session: Session) -> str | None:
    try:
        return (session.path / ADDRESS_FILE).read_text().strip() or None
    except OSError:
        return None
