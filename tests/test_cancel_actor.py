"""cancel() of actor calls, as in Ray: queued calls never run, a running coroutine is cancelled,
a running thread is left to finish; get() of a cancelled call raises TaskCancelledError."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _fake_clock import FakeClock
from _wait import wait_for

import actorhub
from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import TaskCancelledError
from actorhub.wire.call_state import CallState, PendingCall
from actorhub.wire.errors import ErrorKind

pytestmark = pytest.mark.usefixtures("shared_cluster")


# The gate opens through a group of its own: the actor's one default thread is busy meanwhile.
@actorhub.remote(concurrency_groups={"control": 1})
class Serial:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[int] = []
        self.long_done = False

    def long(self) -> str:
        self.release.wait(30)
        self.long_done = True
        return "long done"

    def note(self, i: int) -> int:
        self.ran.append(i)
        return i

    def noted(self) -> list[int]:
        return self.ran

    @actorhub.method(concurrency_group="control")
    def open_gate(self) -> None:
        self.release.set()


@actorhub.remote(max_concurrency=2, concurrency_groups={"control": 1})
class Threaded:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.finished = 0

    def block(self) -> str:
        self.started += 1
        self.release.wait(30)
        self.finished += 1
        return "finished"

    def until_cancelled(self) -> str:
        self.started += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if actorhub.get_runtime_context().is_canceled():
                self.finished += 1
                return "saw the cancel"
            time.sleep(0.01)
        return "no cancel seen"

    @actorhub.method(concurrency_group="control")
    def counts(self) -> tuple[int, int]:
        return self.started, self.finished

    @actorhub.method(concurrency_group="control")
    def open_gate(self) -> None:
        self.release.set()


@actorhub.remote
class Async:
    def __init__(self) -> None:
        self.cancelled_inside = 0
        self.running = 0

    async def sleep(self, seconds: float) -> str:
        self.running += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled_inside += 1
            raise
        finally:
            self.running -= 1
        return "slept"

    async def stats(self) -> tuple[int, int]:
        return self.cancelled_inside, self.running


def test_cancel_100_queued_calls_while_a_long_one_runs() -> None:
    s = Serial.remote()
    actorhub.get(s.__ray_ready__.remote())
    long = s.long.remote()
    queued = [s.note.remote(i) for i in range(100)]
    time.sleep(0.3)  # sent, and queued in the actor's mailbox behind `long`
    for ref in queued:
        actorhub.cancel(ref)
    start = time.monotonic()
    for ref in queued:
        with pytest.raises(TaskCancelledError, match="cancelled"):
            actorhub.get(ref, timeout=10)
    assert time.monotonic() - start < 5  # answered at once, not after the long call
    assert not actorhub.wait([long], timeout=0)[0]
    # Calls made after still work, in order, behind the long one; the cancelled never ran.
    after = [s.note.remote(i) for i in range(100, 150)]
    actorhub.get(s.open_gate.remote())
    assert actorhub.get(long, timeout=30) == "long done"
    assert actorhub.get(after, timeout=30) == list(range(100, 150))
    assert actorhub.get(s.noted.remote()) == list(range(100, 150))


def test_cancel_before_sending() -> None:
    # An actor no node can place (far more CPUs than any node has): its calls stay at the caller.
    pending = Serial.options(num_cpus=10_000).remote()
    refs = [pending.note.remote(i) for i in range(10)]
    for ref in refs:
        actorhub.cancel(ref)
    for ref in refs:
        with pytest.raises(TaskCancelledError):
            actorhub.get(ref, timeout=10)
    actorhub.kill(pending)


def test_cancel_a_running_coroutine() -> None:
    a = Async.remote()
    ref = a.sleep.remote(30)
    wait_for(lambda: actorhub.get(a.stats.remote())[1] == 1, "the sleep to start", 20)
    actorhub.cancel(ref)
    with pytest.raises(TaskCancelledError, match="cancelled"):
        actorhub.get(ref, timeout=10)
    wait_for(lambda: actorhub.get(a.stats.remote()) == (1, 0), "the cancelled sleep to end", 20)
    assert actorhub.get(a.sleep.remote(0.01)) == "slept"


def test_cancel_a_running_thread_lets_it_finish() -> None:
    t = Threaded.remote()
    ref = t.block.remote()
    wait_for(lambda: actorhub.get(t.counts.remote())[0] == 1, "block() to start", 20)
    actorhub.cancel(ref)
    with pytest.raises(TaskCancelledError):
        actorhub.get(ref, timeout=10)
    assert actorhub.get(t.counts.remote()) == (1, 0)  # still running: not interrupted
    actorhub.get(t.open_gate.remote())
    wait_for(lambda: actorhub.get(t.counts.remote()) == (1, 1), "block() to finish", 20)


def test_a_running_thread_can_see_its_cancel() -> None:
    t = Threaded.remote()
    ref = t.until_cancelled.remote()
    wait_for(lambda: actorhub.get(t.counts.remote())[0] == 1, "until_cancelled() to start", 20)
    actorhub.cancel(ref)
    with pytest.raises(TaskCancelledError):
        actorhub.get(ref, timeout=10)
    wait_for(lambda: actorhub.get(t.counts.remote()) == (1, 1), "until_cancelled() to stop early on its own", 20)
    with pytest.raises(RuntimeError, match="only available inside"):
        actorhub.get_runtime_context().is_canceled()


def test_cancel_a_finished_call_is_a_no_op() -> None:
    s = Serial.remote()
    ref = s.note.remote(7)
    assert actorhub.get(ref) == 7
    actorhub.cancel(ref)
    assert actorhub.get(ref) == 7


def test_force_is_refused_for_actor_calls() -> None:
    a = Async.remote()
    ref = a.sleep.remote(5)
    with pytest.raises(ValueError, match="force=True is not supported"):
        actorhub.cancel(ref, force=True)
    actorhub.cancel(ref, recursive=False)
    with pytest.raises(TaskCancelledError):
        actorhub.get(ref, timeout=10)


def test_cancel_queued_calls_of_a_threaded_actor_from_many_threads() -> None:
    t = Threaded.remote()
    running = [t.block.remote() for _ in range(2)]  # both slots taken
    wait_for(lambda: actorhub.get(t.counts.remote())[0] == 2, "both blocks to start", 20)
    queued = [t.block.remote() for _ in range(60)]
    time.sleep(0.3)

    def cancel(refs: list[actorhub.ObjectRef]) -> None:  # type: ignore[type-arg]
        for ref in refs:
            actorhub.cancel(ref)

    threads = [threading.Thread(target=cancel, args=(queued[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for ref in queued:
        with pytest.raises(TaskCancelledError):
            actorhub.get(ref, timeout=10)
    actorhub.get(t.open_gate.remote())
    assert actorhub.get(running, timeout=30) == ["finished"] * 2
    assert actorhub.get(t.counts.remote()) == (2, 2)  # the cancelled never started


@actorhub.remote
def _cancel_borrowed(refs: list[actorhub.ObjectRef], force: bool) -> str:  # type: ignore[type-arg]
    try:
        actorhub.cancel(refs[0], force=force)
    except ValueError as e:
        return f"refused: {e}"
    return "sent"


def test_a_borrower_cancels_through_the_owner() -> None:
    a = Async.remote()
    ref = a.sleep.remote(30)
    wait_for(lambda: actorhub.get(a.stats.remote())[1] == 1, "the sleep to start", 20)
    assert actorhub.get(_cancel_borrowed.remote([ref], True), timeout=60).startswith(
        "refused: force=True is not supported"
    )
    assert actorhub.get(_cancel_borrowed.remote([ref], False), timeout=60) == "sent"
    with pytest.raises(TaskCancelledError):
        actorhub.get(ref, timeout=10)
    wait_for(lambda: actorhub.get(a.stats.remote()) == (1, 0), "the cancelled sleep to end", 20)


# ---- the caller's decisions, without processes (wire/call_state.py) ----------------------------


def _cancel_state() -> CallState:
    state = CallState("a1", "Echo", max_task_retries=-1, max_pending_calls=-1, clock=FakeClock().now)
    state.start()
    state.hub_said(common_pb2.ActorInfo(actor_id="a1", state=common_pb2.ACTOR_STATE_ALIVE, address="w0"))
    for seq in (1, 2, 3):
        assert state.submitted(PendingCall(seq, "m", b"", 1, [f"c.{seq:x}"], -1)) is None
    return state


def test_state_cancel_of_an_unsent_call_fails_it_at_once() -> None:
    state = _cancel_state()
    completions, ring = state.cancel(2)
    assert not ring and [(oid, error.kind) for oid, _, error in completions if error] == [
        ("c.2", ErrorKind.TASK_CANCELLED)
    ]
    batch = worker_pb2.CallBatch()
    state.send_into(batch)
    assert [c.seq for c in batch.calls] == [1, 3] and not batch.cancel_seqs
    assert state.cancel(2) == ([], False)  # settled: nothing more


def test_state_cancel_in_flight_is_sent_once_and_never_retried() -> None:
    state = _cancel_state()
    state.send_into(worker_pb2.CallBatch())
    assert state.cancel(2) == ([], True)
    assert state.cancel(2) == ([], False)  # asked once
    assert state.has_batch()
    batch = worker_pb2.CallBatch()
    state.send_into(batch)
    assert list(batch.cancel_seqs) == [2] and not batch.calls
    # The actor restarts with calls 1..3 in flight: all are retried (max_task_retries=-1) but 2.
    state.stream_ended(taken=True)
    step = state.hub_said(
        common_pb2.ActorInfo(actor_id="a1", state=common_pb2.ACTOR_STATE_ALIVE, address="w1", incarnation=1)
    )
    assert [(oid, error.kind) for oid, _, error in step.fail if error] == [("c.2", ErrorKind.TASK_CANCELLED)]
    assert [c.seq for c in state.unsent] == [1, 3]


def test_state_cancel_of_calls_on_a_stream_never_taken_fails_them_as_cancelled() -> None:
    state = _cancel_state()
    state.send_into(worker_pb2.CallBatch())
    state.cancel(3)
    step = state.stream_ended(taken=False)
    assert [oid for oid, _, _ in step.fail] == ["c.3"] and [c.seq for c in state.unsent] == [1, 2]
    assert not state.cancels_unsent
