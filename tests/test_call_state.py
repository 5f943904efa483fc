"""The caller's side of an actor as a pure state machine (`actorhub.wire.call_state`): events in,
decisions out, no processes, no threads, and a fake clock for the 30 s and 10 s waits."""

from __future__ import annotations

import itertools

import pytest
from _fake_clock import FakeClock

from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import PendingCallsLimitExceededError
from actorhub.runtime.object_table import Completion
from actorhub.wire.call_state import (
    HUB_RETRY_S,
    HUB_UNREACHABLE_S,
    POLL_S,
    QUICK_POLL_S,
    RECONNECT_WAIT_S,
    RESTART_WAIT_S,
    AskHub,
    CallState,
    Connect,
    HubFailure,
    Pause,
    PendingCall,
    Step,
)
from actorhub.wire.errors import ErrorKind, RemoteError

ALIVE = common_pb2.ACTOR_STATE_ALIVE
DEAD = common_pb2.ACTOR_STATE_DEAD
RESTARTING = common_pb2.ACTOR_STATE_RESTARTING
PENDING = common_pb2.ACTOR_STATE_PENDING
DIED = common_pb2.ERROR_KIND_ACTOR_DIED
UNAVAILABLE = common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE


class Caller:
    """A CallState with a fake clock, plus shorthand for the events a connection feeds it."""

    def __init__(self, max_task_retries: int = 0, max_pending_calls: int = -1) -> None:
        self.clock = FakeClock()
        self.state = CallState("a1", "Echo", max_task_retries, max_pending_calls, self.clock.now)
        self._seqs = itertools.count(1)

    def submit(self, method: str, retries: int | None = None, num_returns: int = 1) -> PendingCall:
        seq = next(self._seqs)
        ids = [f"c.{seq}.{i}" for i in range(num_returns)]
        budget = self.state.max_task_retries if retries is None else retries
        call = PendingCall(seq, method, b"", num_returns, ids, budget)
        assert self.state.submitted(call) is None
        return call

    def send(self) -> worker_pb2.CallBatch:
        batch = worker_pb2.CallBatch()
        self.state.send_into(batch)
        return batch

    def connect(self, incarnation: int = 0) -> None:
        """From a fresh state (or one waiting on the hub) to a live stream to `incarnation`."""
        step = self.state.hub_said(alive(incarnation))
        assert step.action == Connect(f"w{incarnation}", incarnation)


def alive(incarnation: int) -> common_pb2.ActorInfo:
    return common_pb2.ActorInfo(actor_id="a1", state=ALIVE, address=f"w{incarnation}", incarnation=incarnation)


def replies(*seqs: int, accepted_seq: int = 0) -> worker_pb2.ReplyBatch:
    out = worker_pb2.ReplyBatch(accepted_seq=accepted_seq)
    for seq in seqs:
        out.replies.add(seq=seq, values=[f"v{seq}".encode()])
    return out


def failed(step: Step) -> dict[str, tuple[int, str]]:
    """Object id -> (error kind, message) of the calls a step fails."""
    out: dict[str, tuple[int, str]] = {}
    for oid, value, error in step.fail:
        assert value is None and error is not None
        out[oid] = (error.kind, error.message)
    return out


def methods(batch: worker_pb2.CallBatch) -> list[str]:
    return [c.method for c in batch.calls]


@pytest.fixture
def caller() -> Caller:
    c = Caller(max_task_retries=0)
    c.state.start()
    return c


# ---- sending and replies -------------------------------------------------------------------


def test_calls_go_in_submission_order_and_replies_complete_their_ids(caller: Caller) -> None:
    caller.connect()
    a, b = caller.submit("a"), caller.submit("b", num_returns=2)
    batch = caller.send()
    assert methods(batch) == ["a", "b"] and [c.seq for c in batch.calls] == [a.seq, b.seq]
    assert not caller.state.unsent and set(caller.state.inflight) == {a.seq, b.seq}
    caller.submit("c")
    assert methods(caller.send()) == ["c"]  # only what was not sent yet

    out = worker_pb2.ReplyBatch()
    out.replies.add(seq=b.seq, values=[b"x", b"y"])
    out.replies.add(seq=a.seq, error=common_pb2.ErrorInfo(message="boom"))
    completions, lent = caller.state.replies_received(out)
    assert lent is None
    assert [(oid, v) for oid, v, _ in completions] == [("c.2.0", b"x"), ("c.2.1", b"y"), ("c.1.0", None)]
    # An error reaches the object table as a plain value; values go through as they came.
    assert completions[2][2] == RemoteError(message="boom")
    assert set(caller.state.inflight) == {3}


def test_a_batch_stays_under_its_byte_budget_and_its_sync_point_waits_for_the_calls_before_it(
    caller: Caller,
) -> None:
    caller.connect()
    big = [PendingCall(seq, "m", b"x" * 600, 1, [f"c.{seq}.0"], 0) for seq in (1, 2, 3)]
    for call in big:
        assert caller.state.submitted(call) is None
    caller.state.want_sync(3)
    first = worker_pb2.CallBatch()
    caller.state.send_into(first, max_bytes=1000)
    # One call fits; the sync point must not go before calls 2 and 3 are sent.
    assert [c.seq for c in first.calls] == [1] and first.sync_seq == 0
    assert caller.state.has_batch()
    second = worker_pb2.CallBatch()
    caller.state.send_into(second, max_bytes=100)  # over budget alone: still sent, one at a time
    assert [c.seq for c in second.calls] == [2] and second.sync_seq == 0
    third = worker_pb2.CallBatch()
    caller.state.send_into(third, max_bytes=1000)
    assert [c.seq for c in third.calls] == [3] and third.sync_seq == 3
    assert not caller.state.has_batch()


def test_replies_lending_refs_are_handed_back_with_their_ids_even_when_settled_already(caller: Caller) -> None:
    caller.connect()
    a = caller.submit("a")
    caller.send()
    out = worker_pb2.ReplyBatch()
    out.replies.add(seq=a.seq, values=[b""], store_ids=["s1"])
    out.replies.add(seq=99, values=[b""], contained=[worker_pb2.ContainedRef(object_id="r")])
    out.replies.add(seq=98, values=[b""])  # settled already and lends nothing: dropped
    completions, lent = caller.state.replies_received(out)
    assert [oid for oid, _, _ in completions] == ["c.1.0"]
    assert lent is not None and [(ids, r.seq) for ids, r in lent] == [(["c.1.0"], a.seq), ([], 99)]


def test_pending_calls_limit_refuses_without_queueing_and_frees_up_with_replies() -> None:
    c = Caller(max_pending_calls=2)
    c.state.start()
    c.connect()
    first = c.submit("a")
    c.send()
    c.submit("b")  # one in flight + one unsent = the limit
    extra = PendingCall(99, "c", b"", 1, ["x"], 0)
    with pytest.raises(PendingCallsLimitExceededError, match="max_pending_calls=2"):
        c.state.submitted(extra)
    assert [p.method for p in c.state.unsent] == ["b"] and c.state.last_seq == 2
    c.state.replies_received(replies(first.seq))
    assert c.state.submitted(extra) is None


def test_unlimited_pending_calls() -> None:
    c = Caller(max_pending_calls=-1)
    for i in range(1000):
        c.submit(f"m{i}")
    assert len(c.state.unsent) == 1000


# ---- a stream that broke: restart, transient, dead --------------------------------------------


def test_restart_retries_within_budget_fails_the_rest_and_keeps_caller_order(caller: Caller) -> None:
    caller.connect(0)
    a, b = caller.submit("a", retries=1), caller.submit("b", retries=0)
    caller.submit("unlimited", retries=-1)
    caller.send()
    caller.submit("d")  # not sent yet
    step = caller.state.stream_ended(True, "UNAVAILABLE", "socket closed")
    # The actor took the stream: no quick poll, a wait of up to 30 s for a newer incarnation.
    assert step.action == AskHub(1, POLL_S) and not step.fail and caller.state.actor_unready
    step = caller.state.hub_said(alive(1))
    assert failed(step) == {"c.2.0": (DIED, (
        "Echo.b: the Echo actor's process died while running this call (incarnation 0); the actor was restarted"
    ))}
    assert step.ring and step.action == AskHub(1, POLL_S)
    caller.connect(1)
    # Retried calls go first, then the one never sent: the caller's order holds.
    assert methods(caller.send()) == ["a", "unlimited", "d"]
    assert (a.retries_left, caller.state.inflight[3].retries_left) == (0, -1)

    # Second restart: a is out of retries, the unlimited one is retried again.
    step = caller.state.stream_ended(True)
    step = caller.state.hub_said(alive(2))
    assert set(failed(step)) == {"c.1.0", "c.4.0"} and b.retries_left == 0
    caller.connect(2)
    assert methods(caller.send()) == ["unlimited"]


def test_same_incarnation_after_the_restart_wait_fails_in_flight_calls_as_unavailable(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("a")
    caller.send()
    caller.state.stream_ended(True, "UNAVAILABLE", "socket closed")
    caller.clock.advance(RESTART_WAIT_S - 1)
    # Still incarnation 0 with a second left: keep polling, no longer than the time left.
    step = caller.state.hub_said(alive(0))
    assert step.action == AskHub(1, 1.0) and not step.fail
    caller.clock.advance(0.995)
    assert caller.state.hub_said(alive(0)).action == AskHub(1, 0.01)  # never a poll under 10 ms
    caller.clock.advance(0.005)
    step = caller.state.hub_said(alive(0))
    assert failed(step) == {"c.1.0": (UNAVAILABLE, (
        "Echo.a: the connection to the Echo actor broke while running this call (UNAVAILABLE: socket closed)"
    ))}
    # Then it reconnects to the same incarnation, and later calls go through.
    assert step.action == AskHub(0, POLL_S)
    caller.connect(0)
    caller.submit("b")
    assert methods(caller.send()) == ["b"]


def test_a_restarting_actor_before_the_wait_ends_is_a_restart(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("a", retries=1)
    caller.send()
    caller.state.stream_ended(True)
    step = caller.state.hub_said(common_pb2.ActorInfo(state=RESTARTING, incarnation=1))
    assert isinstance(step.action, AskHub) and not step.fail  # not alive yet: keep waiting
    caller.clock.advance(RESTART_WAIT_S)
    step = caller.state.hub_said(common_pb2.ActorInfo(state=RESTARTING, incarnation=1))
    # Newer incarnation at the deadline: the call is retried, and the next wait is for incarnation 1.
    assert not step.fail and step.ring and step.action == AskHub(1, POLL_S)


def test_dead_fails_every_call_with_the_cause_and_later_calls_at_once(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("a", retries=5)
    caller.send()
    caller.submit("b")
    caller.state.stream_ended(True)
    cause = common_pb2.ErrorInfo(message="killed", kind=DIED)
    step = caller.state.hub_said(common_pb2.ActorInfo(state=DEAD, death_cause=cause))
    assert step.action is None and failed(step) == {"c.1.0": (DIED, "killed"), "c.2.0": (DIED, "killed")}
    assert not caller.state.unsent and not caller.state.inflight
    later = PendingCall(9, "c", b"", 1, ["z"], 0)
    assert caller.state.submitted(later) == RemoteError(message="killed", kind=ErrorKind.ACTOR_DIED)
    assert not caller.state.unsent
    assert caller.state.wait_over(caller.state.last_seq)


def test_dead_without_a_cause_gets_one_and_an_unknown_actor_is_dead(caller: Caller) -> None:
    caller.submit("a")
    step = caller.state.hub_said(common_pb2.ActorInfo(state=DEAD))
    assert failed(step) == {"c.1.0": (DIED, "the Echo actor a1 is dead")}
    other = Caller()
    other.state.start()
    other.submit("a")
    step = other.state.hub_failed(HubFailure("NOT_FOUND", unknown_actor=True))
    assert step.action is None and failed(step) == {"c.1.0": (DIED, "the hub does not know actor a1")}


# ---- a stream never taken ---------------------------------------------------------------------


def test_calls_on_a_stream_never_taken_go_again_first_and_uncounted(caller: Caller) -> None:
    caller.connect(0)
    a, b = caller.submit("a"), caller.submit("b")  # max_task_retries=0
    caller.send()
    caller.submit("c")
    step = caller.state.stream_ended(False, "DEADLINE_EXCEEDED", "connect timed out")
    assert step.ring and not step.fail and not caller.state.actor_unready
    assert [p.method for p in caller.state.unsent] == ["a", "b", "c"] and not caller.state.inflight
    # A quick look for a restart first, then up to 0.5 s of polls.
    assert step.action == AskHub(1, QUICK_POLL_S)
    assert caller.state.hub_said(alive(0)).action == AskHub(1, RECONNECT_WAIT_S)
    caller.clock.advance(RECONNECT_WAIT_S)
    step = caller.state.hub_said(alive(0))
    # The hub's answers said "not the incarnation asked for": no quick first poll this time.
    assert not step.fail and step.action == AskHub(0, POLL_S)
    caller.connect(0)
    assert methods(caller.send()) == ["a", "b", "c"] and (a.retries_left, b.retries_left) == (0, 0)


def test_a_stream_never_taken_moves_on_to_a_newer_incarnation(caller: Caller) -> None:
    caller.connect(3)
    caller.state.stream_ended(False)
    caller.clock.advance(RECONNECT_WAIT_S)
    step = caller.state.hub_said(common_pb2.ActorInfo(state=RESTARTING, incarnation=4))
    assert step.action == AskHub(4, POLL_S)


# ---- the hub unreachable ------------------------------------------------------------------------


def test_unreachable_hub_fails_calls_after_its_grace_and_keeps_trying(caller: Caller) -> None:
    caller.submit("a")
    unreachable = HubFailure("UNAVAILABLE")
    step = caller.state.hub_failed(unreachable)
    assert step.action == Pause(HUB_RETRY_S) and not step.fail
    caller.clock.advance(HUB_UNREACHABLE_S)
    assert caller.state.paused().action == AskHub(0, POLL_S)
    assert not caller.state.hub_failed(unreachable).fail  # exactly the grace: not yet
    caller.clock.advance(0.1)
    step = caller.state.hub_failed(unreachable)
    assert step.action == Pause(HUB_RETRY_S) and failed(step) == {
        "c.1.0": (UNAVAILABLE, "Echo.a: the hub is unreachable (UNAVAILABLE); cannot reach the Echo actor")
    }
    # The grace starts again for calls made since.
    caller.submit("b")
    caller.clock.advance(HUB_UNREACHABLE_S)
    assert not caller.state.hub_failed(unreachable).fail
    # An answer resets it.
    caller.state.paused()
    caller.state.hub_said(common_pb2.ActorInfo(state=PENDING))
    caller.clock.advance(1)
    assert not caller.state.hub_failed(unreachable).fail
    caller.clock.advance(HUB_UNREACHABLE_S + 0.1)
    assert set(failed(caller.state.hub_failed(unreachable))) == {"c.2.0"}


def test_unreachable_hub_after_a_stream_broke(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("a", retries=3)
    caller.send()
    caller.state.stream_ended(True)
    caller.state.hub_failed(HubFailure("UNAVAILABLE"))
    caller.clock.advance(HUB_UNREACHABLE_S + 1)
    step = caller.state.hub_failed(HubFailure("UNAVAILABLE"))
    assert set(failed(step)) == {"c.1.0"}  # retries do not help when nobody can say where it is


# ---- waiting on the hub: quick first poll, not-alive actors -----------------------------------


def test_first_poll_is_quick_unless_the_actor_is_known_not_alive() -> None:
    c = Caller()
    assert c.state.start().action == AskHub(0, QUICK_POLL_S)
    step = c.state.hub_said(common_pb2.ActorInfo(state=PENDING))
    assert step.action == AskHub(0, POLL_S) and c.state.actor_unready
    c.state.hub_said(alive(0))
    assert not c.state.actor_unready  # connecting


def test_closed_stops_the_thread() -> None:
    c = Caller()
    c.state.start()
    c.connect(0)
    c.state.close()
    assert c.state.stream_ended(True).action is None
    d = Caller()
    d.state.start()
    d.state.hub_failed(HubFailure("UNAVAILABLE"))
    d.state.close()
    assert d.state.paused().action is None
    assert d.state.hub_said(alive(0)).action is None


# ---- delivery before reply: sync_seq and accepted_seq ----------------------------------------


def test_sync_point_is_sent_once_and_its_acknowledgement_takes_calls_in(caller: Caller) -> None:
    caller.connect(0)
    a, b = caller.submit("a"), caller.submit("b")
    target = caller.state.last_seq
    assert target == b.seq and not caller.state.taken_in(target)
    caller.state.send_waiters = 1
    assert caller.state.want_sync(target) and not caller.state.want_sync(target)
    batch = caller.send()
    assert methods(batch) == ["a", "b"] and batch.sync_seq == target
    assert not caller.state.has_batch() and caller.send().sync_seq == 0  # sent once
    assert not caller.state.taken_in(target)
    caller.state.replies_received(replies(accepted_seq=target))
    assert caller.state.taken_in(target) and caller.state.wait_over(target)
    assert set(caller.state.inflight) == {a.seq, b.seq}  # taken in, not replied to


def test_a_reply_to_every_older_call_also_takes_them_in(caller: Caller) -> None:
    caller.connect(0)
    a, b = caller.submit("a"), caller.submit("b")
    caller.send()
    caller.state.replies_received(replies(a.seq))
    assert caller.state.taken_in(a.seq) and not caller.state.taken_in(b.seq)
    caller.submit("c")
    caller.state.replies_received(replies(b.seq))
    assert caller.state.taken_in(b.seq) and not caller.state.taken_in(caller.state.last_seq)


def test_a_retried_call_at_the_head_of_the_queue_is_not_taken_in(caller: Caller) -> None:
    caller.connect(0)
    a = caller.submit("a", retries=1)
    caller.send()
    caller.state.send_waiters = 1
    caller.state.want_sync(a.seq)
    assert caller.send().sync_seq == a.seq
    caller.state.replies_received(replies(accepted_seq=a.seq))
    assert caller.state.taken_in(a.seq)
    caller.state.stream_ended(True)
    caller.state.hub_said(alive(1))  # restarted: a goes back into the queue
    assert not caller.state.taken_in(a.seq)
    # Acknowledgements are per stream: the new stream starts from nothing and sends the sync again.
    caller.connect(1)
    assert caller.state.accepted_seq == 0 and caller.state.has_batch()
    batch = caller.send()
    assert methods(batch) == ["a"] and batch.sync_seq == a.seq


def test_acknowledgements_count_only_while_someone_waits(caller: Caller) -> None:
    # Nobody waiting: the fast path keeps no per-batch bookkeeping (settled() then relies on replies).
    caller.connect(0)
    a = caller.submit("a")
    caller.send()
    caller.state.replies_received(replies(accepted_seq=a.seq))
    assert caller.state.accepted_seq == 0 and not caller.state.taken_in(a.seq)


def test_wait_ends_when_the_actor_is_not_alive(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("a")
    caller.send()
    target = caller.state.last_seq
    assert not caller.state.wait_over(target)
    caller.state.stream_ended(True)  # the actor may be restarting: its calls wait, not the reply
    assert caller.state.wait_over(target) and not caller.state.taken_in(target)


def test_failures_name_the_method(caller: Caller) -> None:
    caller.connect(0)
    caller.submit("ping")
    caller.send()
    caller.state.stream_ended(True)
    caller.clock.advance(RESTART_WAIT_S)
    fail: list[Completion] = caller.state.hub_said(alive(0)).fail
    assert fail[0][2] is not None and fail[0][2].message.startswith("Echo.ping: ")
