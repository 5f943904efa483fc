"""The hub's supervisor (`python -m actorhub.hub.supervisor`): restarts, backoff, start
failures and stopping, over a stand-in hub (tests/_hub_fakes.py) and over the real one."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from _hub_fakes import alive, fake_starts, hub_pid_of_connection, start_supervisor, supervisor_env
from _procs import children, parents
from _wait import wait_for

import actorhub
from actorhub.cluster import launcher
from actorhub.cluster import session as session_module
from actorhub.cluster.session import Session, create_session, latest_session, make_latest
from actorhub.config import Config
from actorhub.hub import supervisor
from actorhub.hub.supervisor import backoff_s

CLI = [sys.executable, "-m", "actorhub.cli"]


@pytest.fixture
def session(session_root: Path) -> Iterator[Path]:
    """A session directory for a supervisor of fake hubs; fails the test if a fake outlives it."""
    path = create_session(session_root).path
    yield path
    # The fakes' command lines do not name actorhub, so conftest's leak check misses them.
    pids = [pid for pid, _ in fake_starts(path)]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"fake hubs left running: {left}"


@pytest.fixture
def port() -> int:
    return launcher._free_port("127.0.0.1")


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Cleanup for a test that failed half way: the supervisor and its group go."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _log(session: Path) -> str:
    return (session / "logs" / supervisor.LOG_NAME).read_text()


def _serving_pid(port: int, other_than: int | None = None) -> int:
    """The pid of the fake hub that answers on `port` (one other than `other_than`)."""

    def answering() -> int | None:
        pid = hub_pid_of_connection(port)
        return pid if pid != other_than else None

    # Polled often: tests time how soon a hub is back.
    return wait_for(answering, f"a hub answering on port {port}", 15, 0.01)


def test_the_supervisor_spells_the_session_names_as_the_session_module_does() -> None:
    # It does not import the session module (boot time), so the names are checked here.
    assert supervisor.ADDRESS_FILE == session_module.ADDRESS_FILE
    assert supervisor.PID_FILE == Session(Path("/x")).pid_file(launcher.SUPERVISOR_ROLE).name
    assert (supervisor.LOG_NAME, supervisor.HUB_OUT) == (launcher.SUPERVISOR_LOG, launcher.HUB_OUT)


def test_the_backoff_doubles_from_a_tenth_of_a_second_up_to_ten() -> None:
    assert [backoff_s(n) for n in range(10)] == pytest.approx([0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10])
    assert backoff_s(10_000) == 10


def test_a_killed_hub_is_back_on_the_same_port_within_a_second(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve")
    try:
        first = _serving_pid(port)
        assert int((session / "hub.pid").read_text()) == first
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = _serving_pid(port, other_than=first)
        back_after = time.monotonic() - killed_at
        # 0.1 s of backoff (it had served under 10 s) and an interpreter's start; slack for a busy machine.
        assert back_after < 2.0, f"the hub was back after {back_after:.2f} s"
        assert int((session / "hub.pid").read_text()) == second
        (_, first_argv), (_, second_argv) = fake_starts(session)
        assert "--recover" not in first_argv
        assert second_argv[second_argv.index("--port") + 1] == str(port) and "--recover" in second_argv
        assert second_argv[second_argv.index("--supervisor-pid") + 1] == str(proc.pid)
        assert re.search(rf"hub pid {first} was killed by SIGKILL after [\d.]+ s up \([\d.]+ s serving\); "
                         r"restart 1 in 0\.1 s", _log(session)), _log(session)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not alive(second)
    finally:
        _end(proc)


def test_a_standby_hub_takes_over_at_once(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve", "--standby-delay-s", "0.2")
    try:
        first = _serving_pid(port)
        # The standby is the supervisor's second child; it counts as a start only once promoted.
        wait_for(lambda: len(children(proc.pid)) == 2, "the standby hub", 15)
        (standby,) = children(proc.pid) - {first}
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = _serving_pid(port, other_than=first)
        back_after = time.monotonic() - killed_at
        assert second == standby
        # 0.1 s of backoff (it had served under 10 s) and no interpreter to boot.
        assert back_after < 1.0, f"the hub was back after {back_after:.2f} s"
        assert f"standby hub pid {standby} takes over" in _log(session)
        (_, second_argv) = fake_starts(session)[1]
        assert "--recover" in second_argv and "--standby-fd" in second_argv
        # A new standby follows, and SIGTERM ends it with the hub.
        wait_for(lambda: len(children(proc.pid)) == 2, "the next standby hub", 15)
        family = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        wait_for(lambda: not any(alive(p) for p in family), "the hub and its standby to end", 10)
    finally:
        _end(proc)


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()


def test_a_hub_that_dies_at_once_is_restarted_with_a_growing_backoff(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "crash")
    try:
        wait_for(lambda: len(fake_starts(session)) >= 5, "five starts", 30)
        wait_for(lambda: "restart 4 in" in _log(session), "the fourth restart logged", 15)
        restarts = [(line, re.search(r"restart (\d+) in ([\d.]+) s", line)) for line in _log(session).splitlines()]
        logged = [(_stamp(line), int(m[1]), float(m[2])) for line, m in restarts if m]
        assert [(n, delay) for _, n, delay in logged[:4]] == [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)], _log(session)
        assert "exited with code 7" in _log(session)
        # Each restart waited its delay before the hub that died next was started: no busy loop.
        for (at, _, delay), (next_at, _, _) in itertools.pairwise(logged[:4]):
            assert next_at - at >= delay - 0.01, _log(session)
        # A stop during a backoff pause ends the supervisor at once.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert not (session / supervisor.PID_FILE).exists()
    finally:
        _end(proc)


def test_a_refused_store_on_a_restart_is_retried_until_a_hub_serves(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve,refuse,refuse,serve")
    try:
        first = _serving_pid(port)
        os.kill(first, signal.SIGKILL)
        fourth = _serving_pid(port, other_than=first)
        starts = fake_starts(session)
        assert len(starts) == 4 and starts[3][0] == fourth
        log = _log(session)
        assert len(re.findall(r"exited with code 3 \(it refused its store; see hub.out\)", log)) == 2, log
        assert re.search(r"restart 3 in 0\.4 s", log), log
        assert "fake hub: refusing the store" in (session / "logs" / supervisor.HUB_OUT).read_text()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        _end(proc)


def test_a_first_hub_that_never_serves_ends_the_supervisor_with_its_exit_code(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "fail")
    try:
        assert proc.wait(15) == 5
        assert len(fake_starts(session)) == 1  # a start failure is not restarted
        assert "the hub exited with code 5 before it served" in _log(session)
        assert not (session / supervisor.PID_FILE).exists()
    finally:
        _end(proc)


def test_sigterm_stops_the_supervisor_and_its_hub(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve")
    try:
        hub = _serving_pid(port)
        assert parents()[hub] == proc.pid
        assert int((session / supervisor.PID_FILE).read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not alive(hub)
        assert not (session / supervisor.PID_FILE).exists()
        log = _log(session)
        assert "received SIGTERM" in log and f"stopping hub pid {hub}" in log and "exits with code 0" in log
    finally:
        _end(proc)


def test_a_hub_that_exits_0_ends_the_supervisor(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve")
    try:
        hub = _serving_pid(port)
        os.kill(hub, signal.SIGTERM)  # the fake hub's clean stop, as after a Shutdown RPC
        assert proc.wait(15) == 0
        assert len(fake_starts(session)) == 1
        assert f"hub pid {hub} exited with code 0" in _log(session)
    finally:
        _end(proc)


def test_a_killed_supervisor_takes_its_hub_with_it(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve")
    try:
        hub = _serving_pid(port)
        proc.kill()  # the supervisor alone, not its group: PR_SET_PDEATHSIG ends the hub
        proc.wait()
        wait_for(lambda: not alive(hub), "the hub to die with its supervisor", 5)
    finally:
        _end(proc)


STARTER = """
import subprocess, sys, time
subprocess.Popen(sys.argv[1:])  # in this process's group, as a careless starter would
time.sleep(60)
"""


def test_the_supervisor_outlives_the_process_group_that_started_it(session: Path, port: int) -> None:
    argv = [sys.executable, "-m", "actorhub.hub.supervisor", "--session-dir", str(session), "--port", str(port),
            "--hub-module", "_hub_fakes"]
    starter = subprocess.Popen([sys.executable, "-c", STARTER, *argv], env=supervisor_env("serve"),
                               start_new_session=True, stdin=subprocess.DEVNULL)
    pid_file = session / supervisor.PID_FILE
    try:
        hub = _serving_pid(port)
        sup = int(pid_file.read_text())
        os.killpg(starter.pid, signal.SIGKILL)  # what a Ctrl-C or a killed job does to its group
        starter.wait()
        time.sleep(0.2)
        assert alive(sup) and alive(hub)
        assert hub_pid_of_connection(port) == hub
        os.kill(sup, signal.SIGTERM)
        wait_for(lambda: not alive(sup) and not alive(hub), "the supervisor and hub to stop", 15)
        assert not pid_file.exists()
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGKILL)
            starter.wait()
        if pid_file.exists() and alive(int(pid_file.read_text())):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


# -- the launcher and the real hub -----------------------------------------------------------------


def test_the_launcher_reports_a_hub_that_cannot_start_with_the_logs(session_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = Config.load(hub_port=taken.getsockname()[1])
        with pytest.raises(launcher.ClusterStartError) as failure:
            launcher.start_head(config)
    message = str(failure.value)
    assert "the hub supervisor exited with code 1" in message, message
    assert "the hub exited with code 1 before it served" in message, message  # its log's tail
    assert "actorhub hub:" in message, message  # hub.out's tail: the hub's own reason


def test_init_runs_the_hub_under_its_supervisor_and_shutdown_stops_both(session_root: Path) -> None:
    context = actorhub.init(num_cpus=1)
    session = Path(context.session_dir)
    try:
        sup = int((session / supervisor.PID_FILE).read_text())
        hub = int((session / "hub.pid").read_text())
        tree = parents()
        assert tree[sup] == os.getpid() and tree[hub] == sup
        assert os.getpgid(hub) == sup  # killing the supervisor's group stops both
    finally:
        actorhub.shutdown()
    assert not alive(sup) and not alive(hub)
    assert re.search(r"hub pid \d+ exited with code 0 .*the cluster was stopped", _log(session)), _log(session)
    assert not (session / supervisor.PID_FILE).exists()


def _cli(*args: str) -> str:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"actorhub {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_actorhub_start_survives_a_killed_hub_and_stop_ends_it(session_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "hub.sqlite3"
    store.parent.mkdir()
    out = _cli("start", "--head", "--num-cpus", "1", "--store", str(store))
    try:
        assert f"hub store:    {store}" in out
        session = latest_session(session_root)
        status = _cli("status")
        assert re.search(rf"Hub: up \d+s, restarted 0 times, store {re.escape(str(store))}", status), status
        first = int(session.pid_file("hub").read_text())
        address = session.hub_address
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()

        def restarted() -> bool:
            result = subprocess.run([*CLI, "status"], capture_output=True, text=True, timeout=60)
            return result.returncode == 0 and "restarted 1 time," in result.stdout

        wait_for(restarted, "the restarted hub to answer", 30, 0.01)
        back_after = time.monotonic() - killed_at
        assert back_after < 5.0, f"status answered again after {back_after:.2f} s"  # each status boots a CLI
        assert session.hub_address == address
        assert int(session.pid_file("hub").read_text()) != first
        assert "restart 1 in" in _log(session.path)
        stopped = _cli("stop")
        assert f"Stopped the cluster at {address}" in stopped
        assert not session.pid_file(launcher.SUPERVISOR_ROLE).exists()
    finally:
        subprocess.run([*CLI, "stop"], capture_output=True, timeout=60)


def test_status_names_the_supervisor_when_its_hub_does_not_answer(session: Path, port: int) -> None:
    proc = start_supervisor(session, port, "serve")  # the fake speaks no gRPC: the hub "does not answer"
    try:
        _serving_pid(port)
        make_latest(Session(session))
        result = subprocess.run([*CLI, "status"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result
        assert f"its supervisor (pid {proc.pid}) runs: the hub may be restarting" in result.stderr, result.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        _end(proc)
