"""Graceful node drain (`actorhub drain`, `actorhub.util.drain_node`): nothing new placed on the
node, calls under way finish, restartable actors move with their queued calls and checkpoints
(no retry or restart budget spent), what cannot move fails with ActorUnavailableError, the
deadline ends what remains, and the node is removed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import end
from _wait import wait_for
from test_call_state import Caller as StateCaller
from test_call_state import alive, methods, replies
from test_hub_actor_table import FakeClock, create, create_alive, make_spec, ok_reply

import actorhub
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    NodeDrainRefusedError,
    NodeNotFoundError,
    OptionsError,
)
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.records import DEAD, RESTARTING, UnknownNode, exit_cause
from actorhub.runtime.ids import new_id
from actorhub.runtime.runtime import current
from actorhub.util import drain_node
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.call_state import POLL_S, AskHub
from actorhub.wire.records import NodeStatus

CALLS_PER_CALLER = 120


@actorhub.remote(max_restarts=1, max_task_retries=0, checkpoint_interval={"calls": 100_000})
class Ledger:
    """A service that records, per caller, the numbers it was sent, in arrival order. Its state
    survives a move only through its checkpoint (taken by the drain: the interval never falls
    due), and a call retried or run twice would show as a gap or a repeat."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def record(self, caller: str, number: int) -> int:
        time.sleep(0.002)  # calls queue up behind each other: some are in flight at the drain
        self.seen.setdefault(caller, []).append(number)
        return number

    def log(self) -> dict[str, list[int]]:
        return self.seen

    def where(self) -> tuple[str, int]:
        return actorhub.get_runtime_context().get_node_id(), os.getpid()

    def __actorhub_checkpoint__(self) -> dict[str, list[int]]:
        return self.seen

    def __actorhub_restore__(self, state: dict[str, list[int]]) -> None:
        self.seen = state


@actorhub.remote
class Caller:
    """Another caller process, calling the ledger from an actor."""

    def run(self, ledger: Any, name: str, count: int) -> list[int]:
        refs = []
        for i in range(count):
            refs.append(ledger.record.remote(name, i))
            if i % 10 == 9:
                time.sleep(0.005)
        return list(actorhub.get(refs, timeout=60))


@actorhub.remote(max_restarts=0, max_concurrency=1)
class Fragile:
    """Not restartable; async, one call at a time: the others wait in its mailbox."""

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "finished"

    async def quick(self, i: int) -> int:
        return i


@actorhub.remote(max_restarts=-1, max_task_retries=0)
class Stuck:
    def block(self) -> None:
        time.sleep(60)

    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()


def _nodes() -> tuple[NodeStatus, ...]:
    return current().hub.cluster_status().nodes


@pytest.fixture
def node(shared_cluster: actorhub.ClusterContext) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second node agent (2 CPUs): (its id, its process)."""
    node_id = new_id(8)
    process = start_node(Config.load(num_cpus=2), Session(Path(shared_cluster.session_dir)), shared_cluster.address,
                         node_id)
    try:
        wait_for(lambda: any(n.node_id == node_id and n.alive for n in _nodes()), "the second node to join", 20)
        yield node_id, process
    finally:
        end(process)


def _on(node_id: str, soft: bool) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=soft)


def _actor_info(handle: Any) -> Any:
    return current().hub.actor_info(handle.actor_id)


def test_a_service_under_load_moves_with_its_queued_calls_and_its_state(
    node: tuple[str, subprocess.Popen[bytes]], shared_cluster: actorhub.ClusterContext,
) -> None:
    node_id, process = node
    # Soft: it starts there and may move anywhere.
    ledger = Ledger.options(name="ledger", scheduling_strategy=_on(node_id, soft=True)).remote()
    assert actorhub.get(ledger.where.remote(), timeout=30)[0] == node_id
    remote_caller = Caller.options(scheduling_strategy=_on(shared_cluster.node_id, soft=False)).remote()
    remote_run = remote_caller.run.remote(ledger, "actor", CALLS_PER_CALLER)
    results: dict[str, list[Any]] = {}

    def call(name: str) -> None:
        refs = []
        for i in range(CALLS_PER_CALLER):
            refs.append(ledger.record.remote(name, i))
            if i % 10 == 9:
                time.sleep(0.005)
        results[name] = actorhub.get(refs, timeout=60)

    threads = [threading.Thread(target=call, args=(f"thread-{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(len(v) for v in actorhub.get(ledger.log.remote(), timeout=30).values()) >= 60,
             "60 calls to reach the ledger", 20)
    seen_draining = threading.Event()
    drained = threading.Event()

    def look() -> None:
        while not drained.is_set():
            if any(n.node_id == node_id and n.draining for n in _nodes()):
                seen_draining.set()
            time.sleep(0.005)

    watcher = threading.Thread(target=look)
    watcher.start()
    summary = drain_node(node_id, deadline_s=20)
    drained.set()
    watcher.join()
    for t in threads:
        t.join(60)
    assert summary.moved == 1 and summary.failed == 0 and summary.killed == 0
    assert seen_draining.is_set()  # `actorhub status` shows it draining meanwhile
    expected = list(range(CALLS_PER_CALLER))
    # Every call answered exactly once with its own value, none failed (max_task_retries=0).
    assert results == {f"thread-{k}": expected for k in range(3)}
    assert actorhub.get(remote_run, timeout=60) == expected
    # In order per caller, each once, the part before the move restored from its checkpoint.
    assert actorhub.get(ledger.log.remote(), timeout=30) == {
        **{f"thread-{k}": expected for k in range(3)}, "actor": expected}
    new_node, _ = actorhub.get(ledger.where.remote(), timeout=30)
    assert new_node != node_id
    info = _actor_info(ledger)
    assert info.incarnation == 1 and info.num_restarts == 0  # a move spends no restart
    gone = next(n for n in _nodes() if n.node_id == node_id)
    assert not gone.alive and gone.drained
    assert process.wait(15) == 0  # the node agent ended cleanly
    actorhub.kill(ledger)


def test_calls_queued_at_an_actor_that_cannot_move_fail_as_unavailable(
    node: tuple[str, subprocess.Popen[bytes]],
) -> None:
    node_id, _ = node
    fragile = Fragile.options(scheduling_strategy=_on(node_id, soft=True)).remote()
    assert actorhub.get(fragile.quick.remote(0), timeout=30) == 0
    running = fragile.slow.remote(2.5)
    time.sleep(0.3)
    queued = [fragile.quick.remote(i) for i in range(1, 6)]
    time.sleep(0.2)
    summary = drain_node(node_id, deadline_s=15)
    assert (summary.moved, summary.failed, summary.killed) == (0, 1, 0)
    assert actorhub.get(running, timeout=30) == "finished"  # the call under way ended
    for ref in queued:
        with pytest.raises(ActorUnavailableError, match=f"node {node_id} is draining"):
            actorhub.get(ref, timeout=30)
    with pytest.raises(ActorDiedError, match="was drained"):
        actorhub.get(fragile.quick.remote(9), timeout=30)


def test_the_deadline_ends_what_still_runs_and_the_actor_restarts_as_on_a_node_loss(
    node: tuple[str, subprocess.Popen[bytes]],
) -> None:
    node_id, process = node
    stuck = Stuck.options(scheduling_strategy=_on(node_id, soft=True)).remote()
    assert actorhub.get(stuck.node.remote(), timeout=30) == node_id
    blocked = stuck.block.remote()
    time.sleep(0.3)
    began = time.monotonic()
    drain = threading.Thread(target=lambda: summaries.append(drain_node(node_id, deadline_s=2.0)))
    summaries: list[Any] = []
    drain.start()
    wait_for(lambda: any(n.node_id == node_id and n.draining for n in _nodes()), "the node to be draining", 20)
    # Nothing new goes to a draining node, even an actor that prefers it.
    newcomer = Stuck.options(scheduling_strategy=_on(node_id, soft=True)).remote()
    assert actorhub.get(newcomer.node.remote(), timeout=30) != node_id
    drain.join(30)
    assert time.monotonic() - began < 12
    summary = summaries[0]
    assert (summary.moved, summary.failed, summary.killed) == (0, 0, 1)
    with pytest.raises(ActorDiedError):
        actorhub.get(blocked, timeout=30)
    assert actorhub.get(stuck.node.remote(), timeout=30) != node_id
    assert _actor_info(stuck).num_restarts == 1  # lost with the node: a restart like any node loss
    assert process.wait(15) == 0
    actorhub.kill(stuck)
    actorhub.kill(newcomer)


def test_draining_an_unknown_node_the_head_or_with_a_bad_deadline_is_a_typed_error(
    shared_cluster: actorhub.ClusterContext,
) -> None:
    with pytest.raises(NodeNotFoundError, match="not known to the hub"):
        drain_node("0123abcd")
    with pytest.raises(NodeDrainRefusedError, match="is the head node"):
        drain_node(shared_cluster.node_id)
    with pytest.raises(OptionsError, match="deadline_s"):
        drain_node(shared_cluster.node_id, deadline_s=-1)
    with pytest.raises(OptionsError, match="node_id"):
        drain_node("")


def test_the_cli_drains_a_node_and_status_shows_it_drained(node: tuple[str, subprocess.Popen[bytes]]) -> None:
    node_id, process = node
    cli = [sys.executable, "-m", "actorhub.cli"]
    done = subprocess.run([*cli, "drain", node_id, "--deadline", "10"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"Node {node_id} drained and removed" in done.stdout
    assert process.wait(15) == 0
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert any(node_id in line and "drained" in line for line in status.stdout.splitlines()), status.stdout
    again = subprocess.run([*cli, "drain", node_id], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "was removed by a drain" in again.stderr


def test_the_tables_drain_moves_without_spending_a_windowed_budget_and_places_nothing_new() -> None:
    """The hub's side alone (no processes), on a fake clock."""
    clock = FakeClock()
    table = ActorTable(clock=clock, placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    table.register_node("n1", "node1:1", 4.0, 11)
    spec = make_spec(max_restarts=1)
    spec.restart_window_s = 60.0
    spec.node_id, spec.node_affinity_soft = "n1", True
    create_alive(table, spec)
    pinned = make_spec("a2", max_restarts=-1)
    pinned.node_id = "n1"  # hard: it cannot leave n1
    create_alive(table, pinned)
    table.register_node("n2", "node2:1", 4.0, 12)
    with pytest.raises(UnknownNode, match="not known to the hub"):
        table.begin_drain("n9")
    table.begin_drain("n1")
    assert [(t.actor_id, t.move) for t in sorted(table.drain_targets("n1", set()), key=lambda t: t.actor_id)] == [
        ("a1", True), ("a2", False)]
    [newcomer] = create(table, make_spec("a3")).placements
    assert newcomer.node_id == "n2"  # nothing new on a draining node
    decisions, kill, restarts = table.actor_drained("a1", 0, "n1")
    assert restarts and kill is not None and kill.node_id == "n1"
    [moved] = decisions.placements
    assert (moved.node_id, moved.incarnation) == ("n2", 1)
    table.start_finished(moved, ok_reply(moved))
    assert table.get_actor("a1").num_restarts == 0
    decisions = table.worker_exited("a1", 1, exit_cause(101, 1, 0))  # a crash right after: budget intact
    assert table.get_actor("a1").state == RESTARTING and table.get_actor("a1").num_restarts == 1
    _, kill, restarts = table.actor_drained("a2", 0, "n1")
    assert not restarts and kill is not None
    table.worker_exited("a2", 0, "killed")
    info = table.get_actor("a2")
    assert info.state == DEAD and "its node n1 was drained" in info.death_cause.message
    _, address = table.remove_drained_node("n1")
    assert address == "node1:1"
    [n1] = [n for n in table.cluster_status().nodes if n.node_id == "n1"]
    assert not n1.alive and n1.drained and not n1.draining


def test_a_moved_stream_puts_its_unanswered_calls_back_first_without_spending_a_retry() -> None:
    """The caller's side alone (wire/call_state.py): a stream a drain ended (its trailer says
    moved) ran none of the calls it did not answer."""
    caller = StateCaller(max_task_retries=0)
    caller.connect(0)
    first, second, third = caller.submit("a"), caller.submit("b"), caller.submit("c")
    caller.send()
    caller.submit("d")  # not sent yet
    caller.state.replies_received(replies(first.seq))
    step = caller.state.stream_ended(True, moved=True)
    # Nothing fails; it waits, without a deadline, for the next incarnation (or the death).
    assert not step.fail and step.ring and step.action == AskHub(1, POLL_S)
    assert caller.state.actor_unready
    assert caller.state.hub_said(alive(0)).action == AskHub(1, POLL_S)  # still the old one: keep waiting
    caller.connect(1)
    assert methods(caller.send()) == ["b", "c", "d"]  # caller order, ahead of the unsent one
    assert (second.retries_left, third.retries_left) == (0, 0)
