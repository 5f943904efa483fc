"""The hub away: nothing else stops while it is, and everything reconnects once it is back.

A frozen hub (SIGSTOP) is an outage too, and needs no supervisor: it accepts connections and
answers nothing. Calls on existing handles go straight to workers and keep flowing; what needs
the hub waits for it within its own deadline, then raises ControlPlaneUnavailableError. A
killed hub (its supervisor restarts it) breaks the leases: the node agent registers again and
the driver reopens its job's lease. A hub gone for good stops the node agent after
`hub_reconnect_timeout_s`, its workers with it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from _procs import stop
from _wait import wait_for
from test_zygote import TESTS, FakeHub, RunningNode

import actorhub
from actorhub._proto.v1 import hub_pb2, hub_pb2_grpc, node_pb2
from actorhub.cluster.session import Session, create_session
from actorhub.exceptions import ControlPlaneUnavailableError
from actorhub.node import zygote as _zygote
from actorhub.runtime.runtime import current
from actorhub.wire.records import ClusterStatus
from actorhub.wire.server import bind, make_server

# Short deadlines for hub operations during a freeze (every process reads them at its start).
DEADLINE_S = 2.0
# What an operation may take beyond its deadline on a loaded 2-core machine.
SLACK_S = 3.0


@actorhub.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONTROL_S", "CREATE_ACTOR_S", "KILL_S"):
        monkeypatch.setenv(f"ACTORHUB_DEADLINES_{name}", str(DEADLINE_S))


@pytest.fixture
def start_cluster(session_root: Path) -> Iterator[Callable[[], actorhub.ClusterContext]]:
    """init() once the test has set its environment; shutdown() at the end, whatever happened."""
    yield lambda: actorhub.init(num_cpus=2)
    actorhub.shutdown()


# -- processes ------------------------------------------------------------------------------------
def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _hub_pid(context: actorhub.ClusterContext) -> int:
    pid = _read_pid(Path(context.session_dir) / "hub.pid")
    assert pid is not None, "the hub wrote no pid file"
    return pid


def _alive(pid: int) -> bool:
    """Running (or stopped), not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def hub_frozen(context: actorhub.ClusterContext, resume_after: float | None = None) -> Iterator[int]:
    """The hub stopped for the block (or until `resume_after` seconds, from another thread)."""
    pid = _hub_pid(context)
    stop(pid)
    timer = None
    if resume_after is not None:
        timer = threading.Timer(resume_after, os.kill, (pid, signal.SIGCONT))
        timer.start()
    try:
        yield pid
    finally:
        if timer is not None:
            timer.cancel()
        os.kill(pid, signal.SIGCONT)


def _status() -> ClusterStatus:
    return current().hub.cluster_status()


def _node_pid(context: actorhub.ClusterContext) -> int:
    return next(n.pid for n in _status().nodes if n.node_id == context.node_id)


def _node_log(context: actorhub.ClusterContext) -> str:
    return (Path(context.session_dir) / "logs" / f"node-{context.node_id}.log").read_text()


def _raises_control_plane_unavailable(call: Callable[[], object], operation: str) -> ControlPlaneUnavailableError:
    start = time.monotonic()
    with pytest.raises(ControlPlaneUnavailableError) as caught:
        call()
    assert time.monotonic() - start < DEADLINE_S + SLACK_S
    err = caught.value
    assert err.operation == operation
    assert current().hub_address in str(err) and "control plane is down or recovering" in str(err)
    return err


# -- a frozen hub ---------------------------------------------------------------------------------
def test_calls_on_existing_handles_flow_in_order_while_the_hub_is_frozen(
    start_cluster: Callable[[], actorhub.ClusterContext],
) -> None:
    context = start_cluster()
    counters = [Counter.remote() for _ in range(2)]
    assert actorhub.get([c.incr.remote() for c in counters], timeout=60) == [1, 1]
    with hub_frozen(context):
        for _ in range(3):
            batches = [[c.incr.remote() for _ in range(300)] for c in counters]
            for calls in batches:
                first = actorhub.get(calls[0], timeout=30)
                assert actorhub.get(calls, timeout=30) == list(range(first, first + 300))
        # Objects live with their owners: put and get need no hub either.
        assert actorhub.get(actorhub.put({"k": 1}), timeout=10) == {"k": 1}
    assert actorhub.get([c.incr.remote() for c in counters], timeout=60) == [902, 902]


def test_hub_operations_raise_control_plane_unavailable_after_their_deadline_while_frozen(
    short_deadlines: None, start_cluster: Callable[[], actorhub.ClusterContext],
) -> None:
    context = start_cluster()
    survivor = Counter.options(name="survivor").remote()
    victim = Counter.remote()
    assert actorhub.get([survivor.incr.remote(), victim.incr.remote()], timeout=60) == [1, 1]
    with hub_frozen(context):
        err = _raises_control_plane_unavailable(lambda: actorhub.get_actor("survivor"), "GetNamedActor")
        assert isinstance(err, TimeoutError)  # a frozen hub took the call in: a deadline, too
        _raises_control_plane_unavailable(Counter.remote, "CreateActor")
        # The hub may still carry this kill out once it resumes: hence not `survivor`.
        _raises_control_plane_unavailable(lambda: actorhub.kill(victim), "KillActor")
        assert actorhub.get(survivor.incr.remote(), timeout=30) == 2
    # Back: the lookup that failed works, as does everything else.
    assert actorhub.get_actor("survivor").actor_id == survivor.actor_id
    fresh = Counter.remote()
    assert actorhub.get(fresh.incr.remote(), timeout=60) == 1


def test_hub_operations_succeed_when_the_hub_resumes_within_their_deadline(
    start_cluster: Callable[[], actorhub.ClusterContext],
) -> None:
    context = start_cluster()  # the default deadlines: 30 s and more
    named = Counter.options(name="named").remote()
    assert actorhub.get(named.incr.remote(), timeout=60) == 1
    with hub_frozen(context, resume_after=1.5):
        start = time.monotonic()
        assert actorhub.get_actor("named").actor_id == named.actor_id
        assert time.monotonic() - start >= 1.0  # it did wait for the hub
        created = Counter.remote()
        assert actorhub.get(created.incr.remote(), timeout=60) == 1
        actorhub.kill(created)
    names = [a.name for a in current().hub.list_actors("", all_namespaces=True)]
    assert "named" in names


def test_a_freeze_longer_than_the_reconnect_timeout_stops_nothing(
    monkeypatch: pytest.MonkeyPatch, start_cluster: Callable[[], actorhub.ClusterContext],
) -> None:
    # A frozen hub breaks no lease: node agents, workers and the driver wait it out, however long.
    monkeypatch.setenv("ACTORHUB_HUB_RECONNECT_TIMEOUT_S", "1.0")
    context = start_cluster()
    counter = Counter.remote()
    worker_pid = actorhub.get(counter.pid.remote(), timeout=60)
    node_pid = _node_pid(context)
    with hub_frozen(context):
        time.sleep(2.5)
        assert _alive(node_pid) and _alive(worker_pid)
        assert actorhub.get(counter.incr.remote(), timeout=30) == 1
    # The node's lease and the job's still hold: the hub places new actors, and counts the job.
    status = _status()
    assert next(n for n in status.nodes if n.node_id == context.node_id).alive
    assert current().address in status.driver_addresses
    fresh = Counter.remote()
    assert actorhub.get(fresh.incr.remote(), timeout=60) == 1
    assert _alive(node_pid) and actorhub.get(counter.pid.remote(), timeout=30) == worker_pid


# -- a killed hub, restarted by its supervisor ----------------------------------------------------
def _supervisor_pid(context: actorhub.ClusterContext) -> int | None:
    return _read_pid(Path(context.session_dir) / "hub-supervisor.pid")


def _new_hub_serving(context: actorhub.ClusterContext, old_pid: int) -> bool:
    pid = _read_pid(Path(context.session_dir) / "hub.pid")
    return pid is not None and pid != old_pid and _alive(pid)


def test_a_killed_hub_comes_back_and_the_node_and_the_job_reconnect(
    start_cluster: Callable[[], actorhub.ClusterContext], caplog: pytest.LogCaptureFixture,
) -> None:
    context = start_cluster()
    assert _supervisor_pid(context) is not None, "init() starts the hub under its supervisor"
    counter = Counter.options(name="steady").remote()
    worker_pid = actorhub.get(counter.pid.remote(), timeout=60)
    node_pid = _node_pid(context)
    old_hub = _hub_pid(context)
    os.kill(old_hub, signal.SIGKILL)
    # Calls on the handle flow while the hub restarts.
    for expected in range(1, 201):
        assert actorhub.get(counter.incr.remote(), timeout=30) == expected
    wait_for(lambda: _new_hub_serving(context, old_hub), "the supervisor to restart the hub", 30)
    # An operation that needs the hub waits for it (it is reloading its state) and succeeds.
    assert actorhub.get_actor("steady").actor_id == counter.actor_id

    # The node registers again (with the actors it hosts) and the driver reopens its job's
    # lease: the restarted hub would take either for dead after its grace period otherwise.
    wait_for(lambda: "registered again" in _node_log(context), "the node agent to register again", 30)
    wait_for(lambda: "is held again" in caplog.text, "the driver to reopen its job's lease", 30)
    status = _status()
    node = next(n for n in status.nodes if n.node_id == context.node_id)
    assert node.alive and node.pid == node_pid
    assert current().address in status.driver_addresses
    assert status.hub_restarts >= 1
    steady = next(a for a in status.actors if a.actor_id == counter.actor_id)
    assert steady.state == "ALIVE" and steady.pid == worker_pid
    assert _alive(node_pid) and _alive(worker_pid)
    # New actors are placed on the node that came back; kill works again.
    fresh = Counter.remote()
    assert actorhub.get(fresh.incr.remote(), timeout=60) == 1
    actorhub.kill(fresh)
    assert actorhub.get(counter.incr.remote(), timeout=30) == 201


# -- a hub gone for good --------------------------------------------------------------------------
def test_a_node_agent_stops_after_the_reconnect_timeout_when_the_hub_is_gone_for_good(
    monkeypatch: pytest.MonkeyPatch, start_cluster: Callable[[], actorhub.ClusterContext],
) -> None:
    reconnect_s = 2.0
    monkeypatch.setenv("ACTORHUB_HUB_RECONNECT_TIMEOUT_S", str(reconnect_s))
    context = start_cluster()
    counter = Counter.remote()
    worker_pid = actorhub.get(counter.pid.remote(), timeout=60)
    node_pid = _node_pid(context)
    supervisor = _supervisor_pid(context)
    if supervisor is not None:
        os.kill(supervisor, signal.SIGKILL)  # first: it would start the hub again
    os.kill(_hub_pid(context), signal.SIGKILL)
    killed_at = time.monotonic()
    # Alive for the reconnect timeout: its actors keep serving meanwhile.
    assert actorhub.get(counter.incr.remote(), timeout=10) == 1
    assert _alive(node_pid) and _alive(worker_pid)
    # Then it stops, and its workers go with it (the leak check sees nothing left behind).
    wait_for(lambda: not _alive(node_pid), "the node agent to stop", reconnect_s + 15)
    assert time.monotonic() - killed_at >= reconnect_s - 0.5
    wait_for(lambda: not _alive(worker_pid), "the node's worker to die with it", 10)
    assert "did not come back within" in _node_log(context)


# -- a node agent alone, with an in-process hub and stand-in workers (tests/_fake_worker.py) --------
class _BreakableHub(FakeHub):
    """Breaks the node's lease once when told; then serves as before."""

    def NodeLease(self, request: object, context: grpc.ServicerContext) -> Iterator[hub_pb2.LeaseEvent]:
        while not self.shutdown.wait(0.05):
            if not context.is_active():
                return
            if self.break_lease.is_set():
                self.break_lease.clear()
                context.abort(grpc.StatusCode.UNAVAILABLE, "the hub is going away")
        yield from super().NodeLease(request, context)


@pytest.fixture
def lone_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_BreakableHub, RunningNode]]:
    monkeypatch.setenv(_zygote.CHILD_ENTRY_ENV, "_fake_worker:run_worker")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    session: Session = create_session(tmp_path)
    hub = _BreakableHub()
    server = make_server(session.token, max_workers=16)
    hub_pb2_grpc.add_HubServicer_to_server(hub, server)
    address = bind(server, "127.0.0.1", 0)
    server.start()
    node = RunningNode(session, hub, address, "node-r")
    try:
        yield hub, node
    finally:
        node.close()
        hub.shutdown.set()
        server.stop(0)


def test_a_repeated_start_actor_joins_the_start_under_way(lone_node: tuple[_BreakableHub, RunningNode]) -> None:
    # A hub that restarted during a StartActor sends it again: one worker, one constructor.
    _, node = lone_node
    replies: list[node_pb2.NodeStartActorReply] = []
    starts = [threading.Thread(target=lambda: replies.append(node.start("j1", "Slow"))) for _ in range(3)]
    for t in starts:
        t.start()
    wait_for(lambda: node.info().actor_workers == 1, "the slow constructor to start", 10)
    time.sleep(0.5)  # the repeats have arrived by now: they took no worker of their own
    assert node.info().actor_workers == 1
    node.stub.KillWorker(node_pb2.KillWorkerRequest(actor_id="j1", incarnation=0), timeout=10)
    for t in starts:
        t.join(15)
    assert len(replies) == 3 and all(not r.ok and "SIGKILL" in r.error.message for r in replies)
    # One constructed already is answered with itself.
    first = node.start("j2")
    again = node.start("j2")
    assert first.ok and again.ok and (again.pid, again.address) == (first.pid, first.address)


def test_a_broken_node_lease_registers_again_with_the_actors_it_hosts(
    lone_node: tuple[_BreakableHub, RunningNode],
) -> None:
    hub, node = lone_node
    running = node.start("h1")
    assert running.ok
    slow = threading.Thread(target=lambda: node.start("h2", "Slow"), daemon=True)
    slow.start()
    wait_for(lambda: node.info().actor_workers == 2, "the slow constructor to start", 10)
    hub.break_lease.set()
    with hub.cond:
        assert hub.cond.wait_for(lambda: any(n.reconnect for n in hub.nodes), timeout=15)
        again = next(n for n in hub.nodes if n.reconnect)
    hosted = {(a.actor_id, a.incarnation, a.starting): a for a in again.actors}
    assert set(hosted) == {("h1", 0, False), ("h2", 0, True)}
    assert (hosted["h1", 0, False].address, hosted["h1", 0, False].pid) == (running.address, running.pid)
    assert again.node_id == "node-r" and again.address == node.address
    # It went on serving: the node and its workers are alive.
    assert node.process.poll() is None and _alive(running.pid)
    node.stub.KillWorker(node_pb2.KillWorkerRequest(actor_id="h2", incarnation=0), timeout=10)
    slow.join(15)
