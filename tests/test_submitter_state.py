"""The task submitter's decisions as a pure state machine (`actorhub.tasks.submit_state`):
placement, lease pools, pipelining and retries, with no processes and a fake clock."""

from __future__ import annotations

import itertools
from typing import Any

import cloudpickle
import pytest
from _fake_clock import FakeClock

from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import (
    AVOID_NODE_S,
    LINGER_S,
    NODES_EVERY_S,
    PIPELINE_DEPTH,
    SHORT_TASK_S,
    Lease,
    Outcome,
    Pool,
    SubmitState,
    Task,
)
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.errors import ErrorKind, RemoteError

ANY_1CPU: Pool = ("", 1.0, "", ())
DIED = ErrorKind.ACTOR_DIED
APPLICATION = ErrorKind.APPLICATION

_seqs = itertools.count(1)


def task(**options: Any) -> Task:
    seq = next(_seqs)
    return Task(seq, f"t{seq}", ("fn", b""), b"", TaskOptions(**options), [f"c.t{seq}.0"])


def pinned(node: str, **options: Any) -> Task:
    return task(scheduling_strategy=NodeAffinitySchedulingStrategy(node), **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_state(clock: FakeClock, nodes: dict[str, float], local: str = "n1") -> SubmitState:
    s = SubmitState(local, clock.now)
    s.nodes_seen(nodes)
    return s


def granted(s: SubmitState, pool: Pool = ANY_1CPU, node: str = "n1") -> tuple[Lease, list[Task]]:
    lease = Lease(object(), pool, node)
    return lease, s.lease_granted(lease)


# ---- placement -------------------------------------------------------------------------------------


def test_caller_node_until_half_used_then_the_least_used_then_queue_at_the_caller(clock: FakeClock) -> None:
    # Ray's hybrid policy (tasks/task_placement.py): below half used a node counts as unloaded,
    # and the caller's node wins ties.
    s = make_state(clock, {"n1": 2.0, "n2": 4.0, "n3": 3.0})
    assert [s.lease_requested(ANY_1CPU) for _ in range(6)] == ["n1", "n2", "n3", "n2", "n3", "n1"]
    for _ in range(3):
        s.lease_requested(ANY_1CPU)
    assert s.room("n1") == s.room("n2") == s.room("n3") == 0
    assert s.lease_requested(ANY_1CPU) == "n1"  # all full: the caller's desk queues it


def test_pinned_pool_asks_its_node_and_zero_cpu_tasks_ask_the_caller(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 2.0, "n2": 2.0})
    assert s.lease_requested(("n2", 1.0, "", ())) == "n2"
    assert s.lease_requested(("", 0.0, "", ())) == "n1"
    assert s.max_leases(("", 0.0, "", ())) == 64


def test_a_node_that_could_not_lend_is_passed_over_for_a_while(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0, "n2": 2.0, "n3": 2.0})
    for t in (task(), task(), task()):
        s.task_ready(t)
    assert s.lease_requested(ANY_1CPU) == "n1"
    assert s.lease_requested(ANY_1CPU) == "n2"
    again, doomed = s.lease_refused(ANY_1CPU, "n2")
    assert again and not doomed  # 3 ready, 2 asked for before, 1 now
    assert s.lease_requested(ANY_1CPU) == "n3"
    assert s.lease_requested(ANY_1CPU) == "n3"
    assert s.lease_requested(ANY_1CPU) == "n1"  # n2 still passed over: queue at the caller's node
    clock.advance(AVOID_NODE_S)
    assert s.lease_requested(ANY_1CPU) == "n2"


def test_a_desk_of_the_callers_node_that_cannot_lend_fails_that_pools_tasks(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 8.0})  # it fits n1, whose desk fails (its first desk needs the hub)
    big, small = task(num_cpus=8), task()
    assert s.task_ready(big) is True and s.task_ready(small) is True
    s.lease_requested(big.pool)
    again, doomed = s.lease_refused(big.pool, "n1")
    assert not again and doomed == [big] and list(s.ready) == [small]
    assert s.ready_pools[big.pool] == 0 and s.requested[big.pool] == 0 and s.load["n1"] == 0


# ---- how many leases -------------------------------------------------------------------------------


def test_leases_held_and_asked_for_stay_within_the_clusters_cpus(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 2.0})
    tasks = [task() for _ in range(5)]
    assert [s.task_ready(t) for t in tasks] == [True, True, False, False, False]
    s.lease_requested(ANY_1CPU)
    _, first = granted(s)
    assert first == [tasks[0]]  # one task deep while another lease is coming
    # Finishing a task does not make room for a third lease: the held one still counts.
    assert s.task_ready(task()) is False
    assert s.max_leases(ANY_1CPU) == 2 and s.max_leases(("", 0.5, "", ())) == 4
    assert s.max_leases(("", 3.0, "", ())) == 0  # no node fits it: its tasks wait (infeasible)


def test_no_more_requests_than_ready_tasks(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 8.0})
    assert s.task_ready(task()) is True
    _, taken = granted(s)
    assert len(taken) == 1 and s.requested[ANY_1CPU] == 0
    # The lease is busy: the next task asks for one of its own.
    assert s.task_ready(task()) is True


# ---- several tasks per lease -----------------------------------------------------------------------


def test_short_tasks_go_sixteen_deep_once_no_lease_is_coming(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    first = task()
    s.task_ready(first)
    lease, taken = granted(s)
    assert taken == [first]
    rest = [task() for _ in range(20)]
    assert [s.task_ready(t) for t in rest] == [False] * 20  # the one lease the node has is held
    first.dispatched_at = clock.now()
    clock.advance(SHORT_TASK_S / 2)
    assert s.task_returned(first, None, "n1") is Outcome.DONE
    taken = s.task_left(lease)
    assert taken == rest[:PIPELINE_DEPTH] and lease.inflight == PIPELINE_DEPTH


def test_long_tasks_go_one_at_a_time(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    first = task()
    s.task_ready(first)
    lease, _ = granted(s)
    for _ in range(3):
        s.task_ready(task())
    first.dispatched_at = clock.now()
    clock.advance(2 * SHORT_TASK_S)
    s.task_returned(first, None, "n1")
    assert len(s.task_left(lease)) == 1


def test_short_tasks_go_one_at_a_time_while_a_lease_is_coming(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 2.0})
    first = task()
    s.task_ready(first)
    lease, _ = granted(s)
    s.short.add(ANY_1CPU)
    for _ in range(3):
        s.task_ready(task())
    assert s.requested[ANY_1CPU] == 1
    assert len(s.task_left(lease)) == 1


# ---- idle leases ------------------------------------------------------------------------------------


def test_idle_leases_serve_the_next_task_then_go_back_after_the_linger(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 2.0})
    t = task()
    s.task_ready(t)
    lease, _ = granted(s)
    assert s.task_left(lease) == [] and s.idle == [lease]
    assert s.task_ready(task()) is lease and lease.inflight == 1 and not s.idle  # reused at once
    s.task_left(lease)
    clock.advance(LINGER_S)
    assert s.expired_leases(clock.now()) == []
    clock.advance(0.001)
    assert s.expired_leases(clock.now()) == [lease]
    assert not s.idle and s.held[ANY_1CPU] == 0


def test_an_idle_lease_of_another_node_is_reused_only_while_the_callers_node_is_full(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0, "n2": 1.0})
    s.task_ready(task())
    s.lease_requested(ANY_1CPU)
    s.lease_requested(ANY_1CPU)  # n2: pretend a second request went out and was granted
    far, _ = granted(s, node="n2")
    s.task_left(far)
    s.load["n1"] -= 1.0  # the caller's node has room again
    assert s.task_ready(task()) is True  # ask the caller's node instead
    s.load["n1"] += 1.0
    assert s.task_ready(task()) is far


def test_nodes_view_goes_stale(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    assert not s.nodes_stale(clock.now() + NODES_EVERY_S)
    assert s.nodes_stale(clock.now() + NODES_EVERY_S + 0.01)


# ---- retries ----------------------------------------------------------------------------------------


def test_worker_deaths_are_retried_up_to_max_retries(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    t = task(max_retries=2)
    died = RemoteError(kind=DIED, message="gone")
    assert [s.task_returned(t, died, "n1") for _ in range(3)] == [Outcome.RETRY, Outcome.RETRY, Outcome.CRASHED]
    forever = task(max_retries=-1)
    assert all(s.task_returned(forever, died, "n1") is Outcome.RETRY for _ in range(10))
    # On another node, it may be gone: the submitter asks the hub before reusing the lease.
    assert s.task_returned(task(), died, "n2") is Outcome.RETRY_UNLESS_NODE_GONE


def test_application_errors_retry_only_as_retry_exceptions_says(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    value_error = RemoteError(kind=APPLICATION, pickled=cloudpickle.dumps(ValueError("x")))
    assert s.task_returned(task(), value_error, "n1") is Outcome.FAILED
    t = task(retry_exceptions=True, max_retries=1)
    assert s.task_returned(t, value_error, "n1") is Outcome.RETRY
    assert s.task_returned(t, value_error, "n1") is Outcome.FAILED
    assert s.task_returned(task(retry_exceptions=[KeyError]), value_error, "n1") is Outcome.FAILED
    assert s.task_returned(task(retry_exceptions=[ValueError]), value_error, "n1") is Outcome.RETRY
    unpicklable = RemoteError(kind=APPLICATION, pickled=b"not a pickle")
    assert s.task_returned(task(retry_exceptions=[ValueError]), unpicklable, "n1") is Outcome.FAILED


def test_cancelled_tasks(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0})
    t = task()
    s.submitted(t)
    assert s.task_ready(t) is True
    assert s.cancel(t.object_ids[0]) == (t, True) and not s.ready and s.ready_pools[ANY_1CPU] == 0
    assert s.task_ready(t) is False  # a cancelled task is not queued again
    cancelled = RemoteError(kind=ErrorKind.TASK_CANCELLED)
    assert s.task_returned(task(), cancelled, "n1") is Outcome.CANCELLED
    s.finished(t)
    assert s.cancel(t.object_ids[0]) == (None, False)


def test_a_lease_lost_with_its_node_is_counted_once_and_takes_no_more_tasks(clock: FakeClock) -> None:
    s = make_state(clock, {"n1": 1.0, "n2": 1.0})
    s.task_ready(task())
    s.lease_requested(ANY_1CPU)
    lease, _ = granted(s, node="n1")
    s.task_ready(task())
    s.lease_lost(lease)
    assert lease.lost and s.held[ANY_1CPU] == 0 and s.load["n1"] == 0
    assert s.next_tasks(lease) == [] and len(s.ready) == 1 and lease not in s.idle
