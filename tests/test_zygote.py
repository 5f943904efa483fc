"""The zygote (driven directly over its pipes) and the node agent (as a process, against an
in-process fake hub), both with the stand-in worker of tests/_fake_worker.py.

Every test checks that no process it caused outlives it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _wait import wait_for

from actorhub._proto.v1 import (
    common_pb2,
    hub_pb2,
    hub_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    worker_pb2_grpc,
)
from actorhub.cluster.launcher import remove_segments
from actorhub.cluster.session import Session, create_session
from actorhub.node import pipe_frames as _frames
from actorhub.node import zygote as _zygote
from actorhub.wire.server import bind, make_server
from actorhub.wire.transport import ChannelPool

TESTS = Path(__file__).resolve().parent


# -- helpers ----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet (orphans in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def children(parent: int) -> set[int]:
    return {pid for pid, ppid in _parents().items() if ppid == parent}


def descendants(root: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parents[int(entry)] = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parents


def assert_all_gone(pids: set[int], timeout: float = 5.0) -> None:
    wait_for(lambda: not any(alive(p) for p in pids), f"processes {sorted(pids)} to end", timeout)


@pytest.fixture
def session(tmp_path: Path) -> Session:
    return create_session(tmp_path)


@pytest.fixture(autouse=True)
def fake_worker_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_zygote.CHILD_ENTRY_ENV, "_fake_worker:run_worker")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


class FakeNode(node_pb2_grpc.NodeServicer):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.registered: dict[str, tuple[str, int, float]] = {}

    def RegisterWorker(self, request: Any, context: Any) -> common_pb2.Empty:
        with self.cond:
            self.registered[request.worker_id] = (request.address, request.pid, time.perf_counter())
            self.cond.notify_all()
        return common_pb2.Empty()

    def wait_registered(self, worker_ids: list[str], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: all(w in self.registered for w in worker_ids), timeout)


class ZygoteDriver:
    def __init__(self, process: _zygote.ZygoteProcess) -> None:
        self.z = process
        self.reader = _frames.FrameReader()
        self.pending: list[node_pb2.ZygoteEvent] = []

    def send(self, command: node_pb2.ZygoteCommand) -> None:
        _frames.write_all(self.z.cmd_fd, _frames.encode_frame(command.SerializeToString()))

    def fork(self, worker_id: str, node_address: str = "") -> None:
        self.send(node_pb2.ZygoteCommand(fork=node_pb2.ForkWorker(
            worker_id=worker_id, node_id="n1", node_address=node_address)))

    def next_event(self, timeout: float = 10.0) -> node_pb2.ZygoteEvent | None:
        """The next event, or None at EOF."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "timed out waiting for a zygote event"
            ready, _, _ = select.select([self.z.event_fd], [], [], remaining)
            if ready:
                data = os.read(self.z.event_fd, 65536)
                if not data:
                    return None
                self.pending += [node_pb2.ZygoteEvent.FromString(f) for f in self.reader.feed(data)]
        return self.pending.pop(0)

    def close(self) -> None:
        if self.z.cmd_fd >= 0:
            os.close(self.z.cmd_fd)
            self.z.cmd_fd = -1


@pytest.fixture
def fake_node(session: Session) -> Iterator[tuple[FakeNode, str]]:
    node = FakeNode()
    server = make_server(session.token, max_workers=8)
    node_pb2_grpc.add_NodeServicer_to_server(node, server)
    address = bind(server, "127.0.0.1", 0)
    server.start()
    yield node, address
    server.stop(0)


# -- the zygote ---------------------------------------------------------------------------------


def test_zygote_forks_signals_and_cleans_up(session: Session, fake_node: tuple[FakeNode, str]) -> None:
    node, node_address = fake_node
    z = _zygote.spawn(session_dir=session.path, hub_address="127.0.0.1:1", bind_host="127.0.0.1",
                      log_path=session.logs / "zygote.log")
    driver = ZygoteDriver(z)
    pids: dict[str, int] = {}
    try:
        # The first fork waits for the zygote's own boot; time the warm ones after it.
        driver.fork("w0", node_address)
        node.wait_registered(["w0"])
        sent = {}
        for worker_id in ("w1", "w2"):
            sent[worker_id] = time.perf_counter()
            driver.fork(worker_id, node_address)
        for _ in range(3):
            event = driver.next_event()
            assert event is not None and event.WhichOneof("event") == "forked"
            assert event.forked.pid > 0
            pids[event.forked.worker_id] = event.forked.pid
        assert set(pids) == {"w0", "w1", "w2"}
        node.wait_registered(["w1", "w2"])
        latency = {w: (node.registered[w][2] - sent[w]) * 1000 for w in sent}
        print(f"ForkWorker -> RegisterWorker: {latency}")
        assert {node.registered[w][1] for w in pids} == set(pids.values())

        # The forked worker is a working gRPC server whose output goes to its session log.
        channels = ChannelPool(session.token)
        worker_pb2_grpc.WorkerStub(channels.get(node.registered["w1"][0])).Ping(common_pb2.Empty(), timeout=5)
        channels.close()
        assert "fake worker w1 serving" in (session.logs / "worker-w1.out").read_text()

        driver.send(node_pb2.ZygoteCommand(signal=node_pb2.SignalWorker(pid=pids["w1"], signal=signal.SIGKILL)))
        event = driver.next_event()
        assert event is not None and event.WhichOneof("event") == "exited"
        assert (event.exited.pid, event.exited.signal) == (pids["w1"], signal.SIGKILL)

        # A pid that is not the zygote's child is never signalled.
        driver.send(node_pb2.ZygoteCommand(signal=node_pb2.SignalWorker(pid=os.getpid(), signal=signal.SIGKILL)))

        # EOF on the command pipe: the zygote kills and reaps every worker, then exits.
        driver.close()
        exited = set()
        while (event := driver.next_event()) is not None:
            assert event.WhichOneof("event") == "exited"
            exited.add(event.exited.pid)
        assert exited == {pids["w0"], pids["w2"]}
        assert z.process.wait(timeout=5) == 0
        assert_all_gone({z.process.pid, *pids.values()})
    finally:
        driver.close()
        z.process.kill()
        z.process.wait()
        os.close(z.event_fd)


def test_zygote_and_workers_die_with_the_node(session: Session) -> None:
    # A stand-in node agent that is SIGKILLed: PDEATHSIG must take the zygote and, through
    # the zygote's death, its worker.
    script = textwrap.dedent(f"""
        import os, select, sys, time
        from pathlib import Path
        from actorhub.node import pipe_frames as _frames
        from actorhub.node import zygote as _zygote
        from actorhub._proto.v1 import node_pb2
        z = _zygote.spawn(session_dir=Path({str(session.path)!r}), hub_address="127.0.0.1:1",
                          bind_host="127.0.0.1", log_path=Path({str(session.logs / "zygote.log")!r}))
        cmd = node_pb2.ZygoteCommand(fork=node_pb2.ForkWorker(worker_id="orphan", node_id="n1"))
        _frames.write_all(z.cmd_fd, _frames.encode_frame(cmd.SerializeToString()))
        reader = _frames.FrameReader()
        frames = []
        while not frames:
            frames = reader.feed(os.read(z.event_fd, 65536))
        event = node_pb2.ZygoteEvent.FromString(frames[0])
        print(z.process.pid, event.forked.pid, flush=True)
        time.sleep(60)
    """)
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        zygote_pid, worker_pid = map(int, node.stdout.readline().split())
        wait_for(lambda: "serving" in (session.logs / "worker-orphan.out").read_text()
                 if (session.logs / "worker-orphan.out").exists() else False, "the worker", 10)
        assert alive(zygote_pid) and alive(worker_pid)
    finally:
        node.kill()
        node.wait()
    assert_all_gone({zygote_pid, worker_pid})


# -- the node agent -----------------------------------------------------------------------------


class FakeHub(hub_pb2_grpc.HubServicer):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.nodes: list[hub_pb2.RegisterNodeRequest] = []
        self.reports: list[hub_pb2.WorkerExitReport] = []
        self.shutdown = threading.Event()
        self.break_lease = threading.Event()

    def RegisterNode(self, request: Any, context: Any) -> hub_pb2.RegisterNodeReply:
        with self.cond:
            self.nodes.append(request)
            self.cond.notify_all()
        return hub_pb2.RegisterNodeReply()

    def NodeLease(self, request: Any, context: Any) -> Iterator[hub_pb2.LeaseEvent]:
        while not self.shutdown.wait(0.05):
            if not context.is_active():
                return
            if self.break_lease.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "the hub is going away")
        yield hub_pb2.LeaseEvent(shutdown=True)

    def ReportWorkerExit(self, request: Any, context: Any) -> common_pb2.Empty:
        with self.cond:
            self.reports.append(request)
            self.cond.notify_all()
        return common_pb2.Empty()

    def wait_report(self, actor_id: str, timeout: float = 10.0) -> hub_pb2.WorkerExitReport:
        with self.cond:
            assert self.cond.wait_for(lambda: any(r.actor_id == actor_id for r in self.reports), timeout)
            return next(r for r in self.reports if r.actor_id == actor_id)


class RunningNode:
    def __init__(self, session: Session, hub: FakeHub, hub_address: str, node_id: str) -> None:
        self.hub = hub
        self.session = session
        self.process = subprocess.Popen([
            sys.executable, "-m", "actorhub.node", "--session-dir", str(session.path),
            "--hub-address", hub_address, "--node-id", node_id, "--prestart", "1", "--num-cpus", "4",
        ])
        with hub.cond:
            mine = lambda: [n for n in hub.nodes if n.node_id == node_id]  # noqa: E731
            assert hub.cond.wait_for(mine, timeout=15), "the node never registered"
            self.address = mine()[-1].address
        self.channels = ChannelPool(session.token)
        self.stub = node_pb2_grpc.NodeStub(self.channels.get(self.address))

    def start(self, actor_id: str, class_name: str = "Counter", incarnation: int = 0) -> Any:
        spec = common_pb2.ActorSpec(actor_id=actor_id, class_name=class_name, num_cpus=1)
        return self.stub.StartActor(node_pb2.NodeStartActorRequest(spec=spec, incarnation=incarnation),
                                    timeout=20)

    def info(self) -> node_pb2.NodeInfo:
        return self.stub.GetNodeInfo(common_pb2.Empty(), timeout=5)

    def close(self) -> None:
        self.channels.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        # A killed node agent leaves its /dev/shm arena: remove it, as `actorhub stop` would.
        remove_segments(self.session)


@pytest.fixture
def fake_hub(session: Session) -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub()
    server = make_server(session.token, max_workers=16)
    hub_pb2_grpc.add_HubServicer_to_server(hub, server)
    address = bind(server, "127.0.0.1", 0)
    server.start()
    yield hub, address
    hub.shutdown.set()
    server.stop(0)


def test_node_agent_runs_kills_and_reports_actors(session: Session, fake_hub: tuple[FakeHub, str]) -> None:
    hub, hub_address = fake_hub
    node = RunningNode(session, hub, hub_address, "node-a")
    try:
        reply = node.start("a1")
        assert reply.ok, reply.error
        assert alive(reply.pid)
        channels = ChannelPool(session.token)
        worker_pb2_grpc.WorkerStub(channels.get(reply.address)).Ping(common_pb2.Empty(), timeout=5)
        channels.close()

        boom = node.start("a2", "Boom")
        assert not boom.ok and "boom in __init__" in boom.error.message
        assert boom.error.type_name == "builtins.ValueError"

        died = node.start("a3", "Die")
        assert not died.ok and died.error.kind == common_pb2.ERROR_KIND_ACTOR_DIED
        assert "died while running the constructor (exit code 3)" in died.error.message

        # KillWorker during a constructor ends the StartActor call with the death.
        slow_reply: list[Any] = []
        slow = threading.Thread(target=lambda: slow_reply.append(node.start("a4", "Slow")))
        slow.start()
        wait_for(lambda: node.info().actor_workers == 2, "the slow constructor to start", 10)
        node.stub.KillWorker(node_pb2.KillWorkerRequest(actor_id="a4", incarnation=0), timeout=10)
        slow.join(30)  # the kill's reaping and the reply can take seconds on a loaded machine
        assert slow_reply, "StartActor of the killed constructor was not answered within 30 s"
        assert not slow_reply[0].ok and "SIGKILL" in slow_reply[0].error.message

        # KillWorker returns once the process is gone, and the exit is reported.
        node.stub.KillWorker(node_pb2.KillWorkerRequest(actor_id="a1", incarnation=0), timeout=10)
        assert not alive(reply.pid)
        report = hub.wait_report("a1")
        assert (report.node_id, report.pid, report.signal) == ("node-a", reply.pid, signal.SIGKILL)
        node.stub.KillWorker(node_pb2.KillWorkerRequest(actor_id="a1", incarnation=0), timeout=10)

        # A worker that dies on its own is reported too.
        crash = node.start("a5", incarnation=2)
        assert crash.ok
        os.kill(crash.pid, signal.SIGKILL)
        assert hub.wait_report("a5").incarnation == 2

        # Only constructed actors are reported, not the constructor failures.
        assert {r.actor_id for r in hub.reports} == {"a1", "a5"}

        # The zygote dies: its workers die with it, are reported, and a new zygote takes over.
        survivor = node.start("a6")
        assert survivor.ok
        # Workers share the zygote's command line; the zygote is the node's only child.
        (zygote_pid,) = children(node.process.pid)
        os.kill(zygote_pid, signal.SIGKILL)
        assert hub.wait_report("a6").signal == signal.SIGKILL
        assert not alive(survivor.pid)
        after = node.start("a7")
        assert after.ok

        info = node.info()
        assert (info.node_id, info.num_cpus, info.actor_workers) == ("node-a", 4.0, 1)
        assert info.available_cpus == 3.0
        wait_for(lambda: node.info().idle_workers == 1, "the pool to refill", 10)

        family = descendants(node.process.pid)
        assert len(family) >= 3  # zygote, actor worker, idle worker
        node.stub.Shutdown(common_pb2.Empty(), timeout=5)
        assert node.process.wait(timeout=10) == 0
        assert_all_gone(family | {node.process.pid})
        assert not session.pid_file("node-node-a").exists()
    finally:
        node.close()


@pytest.mark.parametrize("how", ["lease-shutdown", "lease-broken", "sigterm"])
def test_node_agent_stops_without_leftovers(
    session: Session, fake_hub: tuple[FakeHub, str], how: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub, hub_address = fake_hub
    # A broken lease is a hub that may come back: the node waits this long for it, then stops.
    monkeypatch.setenv("ACTORHUB_HUB_RECONNECT_TIMEOUT_S", "2")
    node = RunningNode(session, hub, hub_address, "node-b")
    try:
        assert session.pid_file("node-node-b").read_text().strip() == str(node.process.pid)
        assert node.start("b1").ok
        wait_for(lambda: node.info().idle_workers == 1, "the pool to refill", 10)
        family = descendants(node.process.pid)
        if how == "lease-shutdown":
            hub.shutdown.set()
        elif how == "lease-broken":
            hub.break_lease.set()
        else:
            node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=10) == 0
        assert_all_gone(family | {node.process.pid})
    finally:
        node.close()
