"""cancel() of tasks, as Ray's test_cancel.py: dependents fail with TaskCancelledError, and a
recursive cancel reaches the tasks the cancelled task submitted (and the refs they make)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import actorhub
from actorhub.exceptions import GetTimeoutError, TaskCancelledError
from actorhub.util.queue import Queue

pytestmark = pytest.mark.usefixtures("shared_cluster")  # 2 CPUs


@actorhub.remote
def spin(seconds: float = 600.0) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return "spun"


@actorhub.remote
def plus_one(x: Any) -> Any:
    return x + 1


@actorhub.remote(num_cpus=2)
def whole_cluster() -> int:
    return 300


@actorhub.remote
def outer(q: Queue, inner_seconds: float) -> None:
    q.put([spin.remote(inner_seconds)])  # in a list: a top-level ref argument would be waited for
    while True:
        time.sleep(0.01)


def _wait_idle() -> None:
    # Every CPU free again: a task that needs them all runs.
    assert actorhub.get(whole_cluster.remote(), timeout=60) == 300


def test_dependents_of_a_cancelled_task_fail_with_task_cancelled() -> None:
    head = spin.remote()
    chain = plus_one.remote(plus_one.remote(head))
    fan = [plus_one.remote(head) for _ in range(5)]
    time.sleep(0.2)
    actorhub.cancel(head)
    for ref in [head, chain, *fan]:
        with pytest.raises(TaskCancelledError):
            actorhub.get(ref, timeout=30)
    _wait_idle()


def test_cancelling_a_queued_dependent_leaves_its_dependency_running() -> None:
    first = spin.remote(0.5)
    second = plus_one.remote(first)  # waits for `first`
    actorhub.cancel(second)
    with pytest.raises(TaskCancelledError):
        actorhub.get(second, timeout=30)
    assert actorhub.get(first, timeout=30) == "spun"


def test_recursive_cancel_reaches_the_tasks_it_submitted_and_their_refs() -> None:
    q = Queue()
    try:
        parent = outer.remote(q, 600.0)
        [child] = q.get(timeout=60)  # a ref the parent created: owned by the parent's worker
        big = whole_cluster.remote()  # needs both CPUs: parent and child hold them
        with pytest.raises(GetTimeoutError):
            actorhub.get(big, timeout=1)
        actorhub.cancel(parent)  # recursive by default
        with pytest.raises(TaskCancelledError):
            actorhub.get(parent, timeout=30)
        with pytest.raises(TaskCancelledError):
            actorhub.get(child, timeout=30)
        assert actorhub.get(big, timeout=60) == 300
    finally:
        q.shutdown()


def test_forced_recursive_cancel_stops_the_children_before_the_worker() -> None:
    q = Queue()
    try:
        parent = outer.remote(q, 600.0)
        q.get(timeout=60)
        actorhub.cancel(parent, force=True)
        with pytest.raises(TaskCancelledError):
            actorhub.get(parent, timeout=30)
        _wait_idle()  # the child's CPU came back too: it did not outlive its parent's worker
    finally:
        q.shutdown()


def test_non_recursive_cancel_leaves_the_children_running() -> None:
    q = Queue()
    try:
        parent = outer.remote(q, 2.0)
        [child] = q.get(timeout=60)
        actorhub.cancel(parent, recursive=False)
        with pytest.raises(TaskCancelledError):
            actorhub.get(parent, timeout=30)
        assert actorhub.get(child, timeout=60) == "spun"
        _wait_idle()
    finally:
        q.shutdown()


def test_cancel_of_a_finished_task_changes_nothing() -> None:
    ref = plus_one.remote(1)
    assert actorhub.get(ref, timeout=30) == 2
    actorhub.cancel(ref)
    actorhub.cancel(ref, force=True)
    assert actorhub.get(ref) == 2
    with pytest.raises(TypeError):
        actorhub.cancel("not a ref")  # type: ignore[arg-type]
