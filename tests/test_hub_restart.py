"""The hub survives its own crash: SIGKILL of the real hub process, with real clusters.

The hub runs under a supervisor (`<session>/hub-supervisor.pid`) that starts it again on the
same address; it reloads its state from SQLite, and node agents, drivers and workers ride the
outage out and reconnect. Every test here SIGKILLs the hub's own pid (`<session>/hub.pid`).

"Back" means: `hub.pid` names a live process other than the one killed, and it answers
ClusterStatus. Drivers that must be new processes run through `tests/_drivers.py`; the test
process itself is a driver where the driver's identity does not matter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from _drivers import COUNTER, REPO, driver_script, run_driver
from _procs import gone
from _wait import wait_for

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session, create_session, latest_session
from actorhub.config import Config, RpcDeadlines
from actorhub.exceptions import ActorDiedError, RpcFailedError
from actorhub.wire.hub import HubClient
from actorhub.wire.records import ActorInfo, ClusterStatus
from actorhub.wire.transport import ChannelPool

CLI = [sys.executable, "-m", "actorhub.cli"]
# The promise for a lookup from a driver started at the kill.
NEW_DRIVER_LOOKUP_S = 2.0
# How long anything may take to come back on a loaded 2-core machine: generous, since a
# failure here is "never", not "slow" (the benchmark measures slow).
BACK_S = 30.0


# -- actors used in the test process ------------------------------------------------------------
@actorhub.remote
class Where:
    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def echo(self, x: int) -> int:
        return x


@actorhub.remote
class Ledger:
    """Records every call it runs, so a lost or repeated call shows in its log."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def record(self, seq: int) -> int:
        self.seen.append(seq)
        return seq

    def log(self) -> list[int]:
        return self.seen


@actorhub.remote
class SlowStart:
    """A constructor that takes `delay` seconds and leaves a line per run in `log_path`."""

    def __init__(self, log_path: str, delay: float) -> None:
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(delay)

    def pid(self) -> int:
        return os.getpid()


# -- processes and the hub ----------------------------------------------------------------------
def hub_pid(session: Path) -> int:
    return int((session / "hub.pid").read_text().strip())


def supervisor_pid(session: Path) -> int:
    return int((session / "hub-supervisor.pid").read_text().strip())


@contextmanager
def hub_client(session: Path) -> Iterator[HubClient]:
    """A client of its own (fresh channel, short deadline, no retries): it tells "the hub
    answers now", which the test's runtime, busy riding the outage out, would not."""
    s = Session(session)
    channels = ChannelPool(s.token)
    try:
        yield HubClient(channels, s.hub_address, RpcDeadlines(control_s=5.0, unavailable_retry_s=0.0))
    finally:
        channels.close()


def hub_status(session: Path) -> ClusterStatus | None:
    """The hub's status, or None when it does not answer."""
    try:
        with hub_client(session) as hub:
            return hub.cluster_status()
    except (RpcFailedError, OSError):
        return None


def all_actors(session: Path, include_dead: bool = False) -> list[ActorInfo]:
    with hub_client(session) as hub:
        return hub.list_actors("", all_namespaces=True, include_dead=include_dead)


def kill_hub(session: Path) -> int:
    """SIGKILL the hub process; returns its pid once it is dead."""
    pid = hub_pid(session)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), f"the hub (pid {pid}) to die", 10)
    return pid


def wait_for_hub(session: Path, old_pid: int, timeout: float = BACK_S) -> ClusterStatus:
    """Wait until a new hub process (not `old_pid`) serves; its first status."""

    def back() -> ClusterStatus | None:
        try:
            pid = hub_pid(session)
        except (OSError, ValueError):
            return None  # between the old pid file and the new one
        if pid == old_pid or gone(pid):
            return None
        return hub_status(session)

    return wait_for(back, f"a new hub to replace pid {old_pid} and answer", timeout)


def restart_hub(session: Path) -> ClusterStatus:
    """Kill the hub and wait for its successor."""
    return wait_for_hub(session, kill_hub(session))


def actor_named(session: Path, name: str) -> ActorInfo | None:
    found = [a for a in all_actors(session) if a.name == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def alive_actor(session: Path, actor_id: str) -> ActorInfo | None:
    return next((a for a in all_actors(session) if a.actor_id == actor_id and a.state == "ALIVE"), None)


# -- clusters and drivers -----------------------------------------------------------------------
def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class Head:
    address: str
    session: Path


@pytest.fixture
def head(session_root: Path) -> Iterator[Head]:
    """A cluster from `actorhub start --head` (2 CPUs): it outlives the drivers that use it."""
    started = cli("start", "--head", "--num-cpus", "2")
    try:
        assert started.returncode == 0, f"actorhub start --head failed:\n{started.stdout}\n{started.stderr}"
        match = re.search(r"hub address:\s+(\S+)", started.stdout)
        assert match, started.stdout
        yield Head(match.group(1), latest_session(session_root).path)
    finally:
        # Also the cleanup when the test failed half way; the leak check then sees what is left.
        cli("stop")


@pytest.fixture
def head_driver(head: Head) -> Iterator[actorhub.ClusterContext]:
    """The test process as a driver of `head` (not the cluster's owner)."""
    context = actorhub.init(address="auto")
    try:
        yield context
    finally:
        actorhub.shutdown()


class Background:
    """A separate driver program running beside the test; its output goes to files (a pipe
    nobody reads could fill and block it), and it never outlives the test."""

    def __init__(self, body: str, tmp_path: Path, name: str, **env: str) -> None:
        self.name = name
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                driver_script(body), stdin=subprocess.PIPE, stdout=out, stderr=err, text=True,
                env={**os.environ, **env}, cwd=REPO,
            )

    @property
    def stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def say(self, line: str) -> None:
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def output(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()}"

    def check_running(self) -> bool:
        """True while it runs; fails the test with its output once it has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"driver {self.name} exited early ({self.proc.returncode}):\n{self.output()}")
        return True

    def finish(self, timeout: float = 90.0) -> str:
        """Its stdout, once it ended well; fails the test with its output otherwise."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"driver {self.name} did not finish within {timeout:g} s:\n{self.output()}")
        if self.proc.returncode != 0:
            pytest.fail(f"driver {self.name} failed ({self.proc.returncode}):\n{self.output()}")
        return self.out.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()


@contextmanager
def background(body: str, tmp_path: Path, name: str, **env: str) -> Iterator[Background]:
    driver = Background(body, tmp_path, name, **env)
    try:
        yield driver
    finally:
        driver.kill()


def read_count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


# -- a detached service across kills ------------------------------------------------------------


def test_a_detached_service_keeps_its_state_and_name_across_three_hub_kills(head: Head) -> None:
    created = run_driver(
        COUNTER
        + """
actorhub.init(address="auto", namespace="svc")
c = Counter.options(name="counter", lifetime="detached").remote()
for _ in range(5):
    actorhub.get(c.incr.remote())
print(c.actor_id, actorhub.get(c.pid.remote()))
"""
    )
    actor_id, pid = created.stdout.split()
    before = hub_status(head.session)
    assert before is not None
    (node,) = before.nodes
    supervisor = supervisor_pid(head.session)

    for kill in range(1, 4):
        killed_at = time.time()
        status = restart_hub(head.session)
        assert status.hub_restarts == kill, status
        assert status.hub_started_at >= killed_at, (status.hub_started_at, killed_at)  # a new process
        # A new driver finds the same actor under its name, with its state.
        looked_up = run_driver(
            """
import actorhub
actorhub.init(address="auto", namespace="svc")
c = actorhub.get_actor("counter")
print(c.actor_id, actorhub.get(c.incr.remote(), timeout=60), actorhub.get(c.pid.remote()))
"""
        )
        assert looked_up.stdout.split() == [actor_id, str(5 + kill), pid], looked_up.stdout

    # The node re-registered as itself, reporting the actor it hosts: same node, same worker.
    status = wait_for(lambda: hub_status(head.session), "the hub's status", 10)
    assert [(n.node_id, n.alive) for n in status.nodes] == [(node.node_id, True)], status.nodes
    counters = [a for a in status.actors if a.class_name == "Counter"]
    assert [(a.actor_id, a.state, str(a.pid), a.num_restarts) for a in counters] == [(actor_id, "ALIVE", pid, 0)]
    assert supervisor_pid(head.session) == supervisor and not gone(supervisor)
    # `actorhub status` shows the hub's uptime and restarts.
    shown = cli("status")
    assert shown.returncode == 0, shown
    restarts = [line for line in shown.stdout.splitlines() if "restart" in line.lower()]
    assert restarts and re.search(r"\b3\b", restarts[0]), shown.stdout
    assert "uptime" in shown.stdout.lower() or re.search(r"\bup\b", shown.stdout), shown.stdout


# -- calls during the outage, lookups right after it --------------------------------------------
def test_calls_through_a_handle_made_before_the_kill_succeed_during_the_outage(
    cluster: actorhub.ClusterContext,
) -> None:
    session = Path(cluster.session_dir)
    a = Where.remote()
    assert actorhub.get(a.echo.remote(0), timeout=60) == 0
    back_at: list[float] = []
    old = hub_pid(session)

    def watch() -> None:
        wait_for_hub(session, old)
        back_at.append(time.monotonic())

    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    done: list[float] = []
    i = 0
    # Calls until the hub is back, and 200 more.
    while not back_at or len([t for t in done if t > back_at[0]]) < 200:
        i += 1
        assert actorhub.get(a.echo.remote(i), timeout=60) == i
        done.append(time.monotonic())
        assert time.monotonic() - killed_at < BACK_S + 30, "the hub did not come back"
    watcher.join(5)
    during = [t for t in done if t < back_at[0]]
    # A restart takes at least a Python interpreter's start: at thousands of calls per second
    # on a live handle, a few dozen must fit in it, unless calls wait for the hub.
    assert len(during) >= 20, (
        f"only {len(during)} calls completed in the {back_at[0] - killed_at:.2f} s outage ({len(done)} in all)"
    )
    # This driver owns the cluster: its job lease is re-attached, not taken as its death.
    status = wait_for(lambda: (s := hub_status(session)) and s.live_jobs >= 1 and s, "the job to re-attach", 15)
    assert any(x.actor_id == a.actor_id and x.state == "ALIVE" for x in status.actors)
    # Operations that need the hub work again.
    actorhub.kill(a)
    with pytest.raises(ActorDiedError):
        actorhub.get(a.echo.remote(-1), timeout=60)


def test_get_actor_from_a_new_driver_works_within_2s_of_the_kill(
    head: Head, head_driver: actorhub.ClusterContext, tmp_path: Path
) -> None:
    svc = Where.options(name="svc", namespace="lookup", lifetime="detached").remote()
    assert actorhub.get(svc.echo.remote(1), timeout=60) == 1
    body = """
import sys, time
import actorhub
# The kernel's imports before the kill: the clock measures the cluster, not Python's imports.
import actorhub.api.actor_handle, actorhub.namespaces.lookup, actorhub.runtime.runtime, actorhub.worker.service
print("ready", flush=True)
sys.stdin.readline()
actorhub.init(address="auto", namespace="lookup")
h = actorhub.get_actor("svc")
found = time.monotonic()
assert actorhub.get(h.echo.remote(7), timeout=60) == 7
print(found, time.monotonic(), h.actor_id, flush=True)
"""
    with background(body, tmp_path, "lookup") as driver:
        wait_for(lambda: driver.check_running() and "ready" in driver.out.read_text(), "the driver to start", 60)
        old = hub_pid(head.session)
        killed_at = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process here
        os.kill(old, signal.SIGKILL)
        driver.say("go")
        found, answered, actor_id = driver.finish(60).splitlines()[-1].split()
    assert actor_id == svc.actor_id
    took = float(found) - killed_at
    print(f"get_actor from a new driver: {took:.2f} s after the kill")  # shown by -rP, for the record
    assert took < NEW_DRIVER_LOOKUP_S, (
        f"get_actor succeeded {took:.2f} s after the kill (its call: {float(answered) - killed_at:.2f} s)"
    )
    assert hub_pid(head.session) != old


# -- load ---------------------------------------------------------------------------------------
# A driver that calls at `RATE` per second, `BATCH` at a time, with a few batches in flight, until
# the stop file exists; a call held up by the outage shows as lag, never as a loss. MODE=actor
# calls the detached Ledger; MODE=task runs a task that appends its number to TASK_LOG.
CALLER = """
import json, os, time
from pathlib import Path
import actorhub

RATE, BATCH, IN_FLIGHT = 1000, 20, 5
progress, stop = Path(os.environ["PROGRESS"]), Path(os.environ["STOP"])
actorhub.init(address="auto", namespace="load")
if os.environ["MODE"] == "actor":
    ledger = actorhub.get_actor("ledger")
    def submit(seqs):
        return [ledger.record.remote(s) for s in seqs]
else:
    @actorhub.remote
    def record(seq, path):
        with open(path, "a") as f:
            f.write(f"{seq}\\n")
        return seq
    log = os.environ["TASK_LOG"]
    def submit(seqs):
        return [record.remote(s, log) for s in seqs]

def report(n):
    tmp = progress.with_suffix(".tmp")
    tmp.write_text(str(n))
    tmp.replace(progress)

results, pending, seq = [], [], 0
start = time.monotonic()
while not stop.exists():
    pending.append(submit(range(seq, seq + BATCH)))
    seq += BATCH
    while len(pending) > IN_FLIGHT:
        results.extend(actorhub.get(pending.pop(0), timeout=60))
    report(len(results))
    ahead = start + seq / RATE - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
for refs in pending:
    results.extend(actorhub.get(refs, timeout=60))
wrong = [(i, r) for i, r in enumerate(results) if r != i][:10]
print(json.dumps({"sent": seq, "answered": len(results), "wrong": wrong, "seconds": time.monotonic() - start}))
"""

# A driver that creates an actor, calls it and kills it, in a loop until the stop file exists.
# Hub operations may fail with ControlPlaneUnavailableError while the hub is down (their
# deadline passed); that cycle is tried again. Any other error fails the driver.
CHURNER = """
import json, os
from pathlib import Path
import actorhub
from actorhub.exceptions import ControlPlaneUnavailableError

progress, stop = Path(os.environ["PROGRESS"]), Path(os.environ["STOP"])
actorhub.init(address="auto", namespace="churn")

@actorhub.remote
class Churn:
    def ping(self):
        return "pong"

cycles = unavailable = 0
while not stop.exists():
    try:
        a = Churn.remote()
        assert actorhub.get(a.ping.remote(), timeout=60) == "pong"
        actorhub.kill(a)
    except ControlPlaneUnavailableError:
        unavailable += 1
        continue
    cycles += 1
    tmp = progress.with_suffix(".tmp")
    tmp.write_text(str(cycles))
    tmp.replace(progress)
print(json.dumps({"cycles": cycles, "unavailable": unavailable}))
"""


def _run_under_load(head: Head, tmp_path: Path, mode: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A caller and a churner run, the hub is killed, both go on past its return.

    Returns both drivers' reports and the calls answered during the outage.
    """
    stop = tmp_path / "stop"
    calls, cycles = tmp_path / "calls.progress", tmp_path / "cycles.progress"
    with (
        background(CALLER, tmp_path, "caller", MODE=mode, PROGRESS=str(calls), STOP=str(stop),
                   TASK_LOG=str(tmp_path / "tasks.log")) as caller,
        background(CHURNER, tmp_path, "churner", PROGRESS=str(cycles), STOP=str(stop)) as churner,
    ):
        def running(check: Callable[[], bool]) -> bool:
            return caller.check_running() and churner.check_running() and check()

        # Both at work (and past their warm-up) before the kill.
        wait_for(lambda: running(lambda: read_count(calls) >= 1000 and read_count(cycles) >= 3),
                 "the load to start", 60)
        old = kill_hub(head.session)
        at_kill = read_count(calls)
        wait_for_hub(head.session, old)
        at_back, cycles_at_back = read_count(calls), read_count(cycles)
        # Both go on after the return: three seconds' worth of calls, a few actor cycles (each
        # a creation, a call and a kill through the new hub).
        wait_for(
            lambda: running(lambda: read_count(calls) >= at_back + 3000 and read_count(cycles) >= cycles_at_back + 5),
            "the load to go on after the hub's return", 60,
        )
        stop.touch()
        return last_json(caller.finish()), last_json(churner.finish()), at_back - at_kill


def test_under_load_every_actor_call_is_answered_once_across_a_hub_kill(
    head: Head, head_driver: actorhub.ClusterContext, tmp_path: Path
) -> None:
    ledger = Ledger.options(name="ledger", namespace="load", lifetime="detached").remote()
    actorhub.get(ledger.log.remote(), timeout=60)
    caller, churner, during = _run_under_load(head, tmp_path, "actor")
    assert caller["wrong"] == [] and caller["answered"] == caller["sent"], caller
    log = actorhub.get(ledger.log.remote(), timeout=60)
    # Exactly once each, in the caller's order: none lost, none run twice.
    assert log == list(range(caller["sent"])), (len(log), caller["sent"], Counter(log).most_common(3))
    assert during > 0, "no call on the existing handle was answered while the hub was down"
    assert churner["cycles"] > 0, churner
    _no_live(head.session, "Churn")


def test_under_load_every_task_runs_once_across_a_hub_kill(
    head: Head, head_driver: actorhub.ClusterContext, tmp_path: Path
) -> None:
    caller, churner, _ = _run_under_load(head, tmp_path, "task")
    assert caller["wrong"] == [] and caller["answered"] == caller["sent"], caller
    ran = Counter(int(line) for line in (tmp_path / "tasks.log").read_text().split())
    assert sorted(ran) == list(range(caller["sent"])), f"{caller['sent'] - len(ran)} tasks never ran"
    twice = [seq for seq, n in ran.items() if n > 1]
    assert not twice, f"{len(twice)} tasks ran more than once, e.g. {twice[:5]}"
    assert churner["cycles"] > 0, churner
    _no_live(head.session, "Churn")


def _no_live(session: Path, class_name: str) -> None:
    """The churner's job ended: no actor of its class is left alive (none was made twice)."""
    wait_for(lambda: not [a for a in all_actors(session) if a.class_name == class_name],
             f"the {class_name} actors of the finished job to be gone", 30)


# -- creation across the kill -------------------------------------------------------------------
@pytest.mark.parametrize(
    "delay",
    [
        pytest.param(0.3, id="constructor-ends-in-the-outage"),  # its StartActor reply has no hub to go to
        pytest.param(2.5, id="constructor-outlasts-the-outage"),  # the node reports it as still starting
    ],
)
def test_an_actor_whose_creation_spans_the_kill_ends_up_alive_once(
    cluster: actorhub.ClusterContext, tmp_path: Path, delay: float
) -> None:
    session = Path(cluster.session_dir)
    log = tmp_path / "constructed"
    log.touch()
    slow = SlowStart.options(name="slow", max_restarts=1).remote(str(log), delay)
    # The constructor is running (its first line is written) when the hub dies.
    wait_for(lambda: log.read_text().strip(), "the constructor to start", 30)
    status = restart_hub(session)
    pid = actorhub.get(slow.pid.remote(), timeout=60)
    assert log.read_text().split() == [str(pid)], "the constructor ran more than once"
    mine = [a for a in all_actors(session, include_dead=True) if a.class_name == "SlowStart"]
    assert [(a.actor_id, a.state, a.pid, a.incarnation, a.num_restarts) for a in mine] == [
        (slow.actor_id, "ALIVE", pid, 0, 0)
    ], (mine, status)
    # "Never twice" is a claim about later too: a second instance the hub started by mistake
    # would have written its line within one constructor's time. Waiting is the only check.
    time.sleep(delay + 1.0)
    assert log.read_text().split() == [str(pid)]
    assert [(a.state, a.pid) for a in all_actors(session) if a.class_name == "SlowStart"] == [("ALIVE", pid)]


# -- the store ----------------------------------------------------------------------------------
def _hub_command(session: Session, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "actorhub.hub", "--session-dir", str(session.path), "--store", str(store), *extra]


def _refused(session: Session, store: Path, *extra: str) -> str:
    result = subprocess.run(_hub_command(session, store, *extra), capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, cwd=REPO)
    assert result.returncode == 3, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert not (session.path / "hub_address").exists(), "a hub that refused its store served anyway"
    # The reason is in the hub's log too, where an operator of a supervised hub looks.
    assert str(store) in (session.logs / "hub.log").read_text(), "hub.log does not name the refused store"
    return result.stderr


def test_a_corrupt_or_missing_store_is_refused_with_the_reason(session_root: Path, tmp_path: Path) -> None:
    session = create_session(session_root)
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not an SQLite database\n" * 200)
    said = _refused(session, corrupt)
    assert str(corrupt) in said and re.search(r"corrupt|not a database|malformed", said, re.I), said
    assert corrupt.read_bytes() == b"this is not an SQLite database\n" * 200, "the hub changed a store it refused"

    missing = tmp_path / "missing.sqlite3"
    said = _refused(session, missing, "--recover")
    assert str(missing) in said and re.search(r"missing|does not exist|no such|not found", said, re.I), said
    assert not missing.exists(), "--recover made the store it was told to recover"


def test_store_on_a_fresh_path_starts_empty(session_root: Path, tmp_path: Path) -> None:
    session = create_session(session_root)
    store = tmp_path / "fresh" / "control.sqlite3"
    store.parent.mkdir()
    output = tmp_path / "hub.out"
    with open(output, "wb") as out:
        hub = subprocess.Popen(_hub_command(session, store), stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for(lambda: hub.poll() is not None or (session.path / "hub_address").exists(), "the hub to serve", 60)
        assert hub.poll() is None, output.read_text(errors="replace")
        status = wait_for(lambda: hub_status(session.path), "the hub's status", 30)
        assert (status.nodes, status.actors, status.live_jobs) == ((), (), 0), status
        assert status.hub_restarts == 0 and Path(status.store_path) == store, status
        assert store.exists()
        with hub_client(session.path) as client:
            assert client.shutdown_cluster(10.0)
        assert hub.wait(30) == 0
    finally:
        if hub.poll() is None:
            hub.kill()
        hub.wait()


def test_a_store_path_from_the_environment_is_used_and_reloaded_after_a_kill(
    session_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "elsewhere.sqlite3"
    monkeypatch.setenv("ACTORHUB_HUB_STORE_PATH", str(store))
    context = actorhub.init(num_cpus=1)
    try:
        session = Path(context.session_dir)
        kept = Where.options(name="kept", lifetime="detached").remote()
        pid = actorhub.get(kept.pid.remote(), timeout=60)
        status = hub_status(session)
        assert status is not None and Path(status.store_path) == store and store.exists(), status
        assert not (session / "control.sqlite3").exists(), "the hub also wrote the session's default store"
        status = restart_hub(session)
        assert Path(status.store_path) == store and status.hub_restarts == 1, status
        info = actor_named(session, "kept")
        assert info is not None and (info.actor_id, info.state, info.pid) == (kept.actor_id, "ALIVE", pid), info
    finally:
        actorhub.shutdown()


# -- reconciliation -----------------------------------------------------------------------------
def test_an_actor_whose_worker_died_in_the_outage_restarts_within_its_budget(
    cluster: actorhub.ClusterContext,
) -> None:
    session = Path(cluster.session_dir)
    restarts = Where.options(max_restarts=1).remote()
    no_restarts = Where.options(max_restarts=0).remote()
    old_pids = actorhub.get([restarts.pid.remote(), no_restarts.pid.remote()], timeout=60)
    old_hub = kill_hub(session)
    # Killed while no hub runs: only the node agent sees these exits, and reports them later.
    for pid in old_pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(gone(p) for p in old_pids), "the workers to die", 10)
    wait_for_hub(session, old_hub)
    new_pid = actorhub.get(restarts.pid.remote(), timeout=60)
    assert new_pid not in old_pids
    info = alive_actor(session, restarts.actor_id)
    assert info is not None and (info.pid, info.num_restarts, info.incarnation) == (new_pid, 1, 1), info
    with pytest.raises(ActorDiedError):
        actorhub.get(no_restarts.pid.remote(), timeout=60)
    dead = next(a for a in all_actors(session, include_dead=True) if a.actor_id == no_restarts.actor_id)
    assert dead.state == "DEAD" and dead.death_cause, dead


def test_names_restart_counts_and_job_ids_continue_across_the_kill(
    head: Head, head_driver: actorhub.ClusterContext
) -> None:
    named = Where.options(name="w", namespace="cont", lifetime="detached", max_restarts=3).remote()
    first_pid = actorhub.get(named.pid.remote(), timeout=60)
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: (a := alive_actor(head.session, named.actor_id)) and a.num_restarts == 1,
             "the first restart", 30)
    restarts_before = wait_for(lambda: hub_status(head.session), "status", 10).hub_restarts

    status = restart_hub(head.session)
    assert status.hub_restarts == restarts_before + 1
    # The ALIVE that status showed may not have been stored when the hub died: the actor is then
    # RESTARTING (placing) until its node registers again and reports it.
    def alive_again() -> ActorInfo | None:
        found = actor_named(head.session, "w")
        return found if found is not None and found.state == "ALIVE" else None

    info = wait_for(alive_again, "the actor to be ALIVE again", 10)
    assert (info.actor_id, info.num_restarts) == (named.actor_id, 1), info
    second_pid = actorhub.get(actorhub.get_actor("w", namespace="cont").pid.remote(), timeout=60)
    assert second_pid == info.pid
    # The count goes on from 1, and the budget with it.
    os.kill(second_pid, signal.SIGKILL)
    wait_for(lambda: (a := alive_actor(head.session, named.actor_id)) and a.num_restarts == 2,
             "the second restart", 30)
    # A job registered after the restart gets a new id, after every id handed out before it.
    later = run_driver("""
import actorhub
print(actorhub.init(address="auto").job_id)
""")
    assert int(later.stdout.split()[-1], 16) > int(head_driver.job_id, 16), (later.stdout, head_driver.job_id)


# The driver whose job must survive the outage (it re-attaches its lease) and the one that dies in it.
HOLDER = """
import os, sys, actorhub
actorhub.init(address="auto", namespace="jobs")

@actorhub.remote
class Held:
    def pid(self):
        return os.getpid()

held = Held.options(name=os.environ["NAME"]).remote()
print(actorhub.get(held.pid.remote(), timeout=60), flush=True)
sys.stdin.readline()
# After the restart: a call, and an operation that needs the hub.
assert actorhub.get(held.pid.remote(), timeout=60)
other = Held.remote()
assert actorhub.get(other.pid.remote(), timeout=60)
print("done", flush=True)
"""


def test_drivers_reattach_and_a_driver_that_died_in_the_outage_loses_its_actors(
    head: Head, tmp_path: Path
) -> None:
    with (
        background(HOLDER, tmp_path, "kept", NAME="kept") as kept,
        background(HOLDER, tmp_path, "orphan", NAME="orphan") as orphan,
    ):
        pids = {}
        for driver in (kept, orphan):
            line = wait_for(lambda d=driver: d.check_running() and d.out.read_text().strip(),
                            f"driver {driver.name}'s actor", 60)
            pids[driver.name] = int(line)
        old = kill_hub(head.session)
        orphan.kill()  # SIGKILL, while no hub runs to see its lease break
        wait_for_hub(head.session, old)
        # The dead driver's actor is cleaned up after the restart, its worker with it.
        wait_for(lambda: actor_named(head.session, "orphan") is None, "the dead driver's actor to go", 60)
        wait_for(lambda: gone(pids["orphan"]), "the dead driver's actor's worker to exit", 15)
        # The live driver's actor stayed, and the driver works on.
        info = actor_named(head.session, "kept")
        assert info is not None and (info.state, info.pid) == ("ALIVE", pids["kept"]), info
        kept.say("go")
        assert "done" in kept.finish(60)
    # Its job ended normally after the restart: its lease was the re-attached one.
    wait_for(lambda: actor_named(head.session, "kept") is None, "the finished driver's actor to go", 30)


# -- node agent restart -------------------------------------------------------------------------
def test_a_sigkilled_node_agent_started_again_joins_as_a_new_node_and_gets_the_actors(
    cluster: actorhub.ClusterContext,
) -> None:
    session = Path(cluster.session_dir)
    actors = [Where.options(max_restarts=1).remote() for _ in range(2)]
    old_pids = actorhub.get([a.pid.remote() for a in actors], timeout=60)
    (old_node,) = wait_for(lambda: hub_status(session), "status", 10).nodes
    os.kill(old_node.pid, signal.SIGKILL)
    wait_for(lambda: all(gone(p) for p in [old_node.pid, *old_pids]), "the node agent and its workers to die", 15)
    wait_for(lambda: (s := hub_status(session)) and not any(n.alive for n in s.nodes),
             "the hub to see the node gone", 30)
    again = start_node(Config.load(num_cpus=2), Session(session), cluster.address)
    try:
        status = wait_for(lambda: (s := hub_status(session)) and any(n.alive for n in s.nodes) and s,
                          "the new node agent to join", 60)
        (new_node,) = [n for n in status.nodes if n.alive]
        assert new_node.node_id != old_node.node_id and new_node.pid == again.pid
        assert [n.alive for n in status.nodes if n.node_id == old_node.node_id] == [False]
        for a in actors:
            assert actorhub.get(a.node.remote(), timeout=60) == new_node.node_id
        for a in actors:
            info = alive_actor(session, a.actor_id)
            assert info is not None and info.num_restarts == 1 and info.pid not in old_pids, info
    finally:
        actorhub.shutdown()  # stops the cluster, the new node with it
        try:
            again.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(again.pid, signal.SIGKILL)
            again.wait()
