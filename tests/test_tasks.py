"""Remote functions (tasks) on a real cluster: parallelism, dependencies, retries, cancel."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import actorhub
from actorhub.exceptions import (
    OwnerDiedError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote
def add(a: int, b: int) -> int:
    return a + b


@actorhub.remote
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@actorhub.remote
def fail(message: str) -> None:
    raise KeyError(message)


@actorhub.remote(num_returns=2)
def split(x: int) -> tuple[int, int]:
    return x, -x


def test_results_and_options() -> None:
    assert actorhub.get(add.remote(1, 2)) == 3
    assert actorhub.get([add.remote(i, i) for i in range(50)]) == [2 * i for i in range(50)]
    a, b = split.remote(5)
    assert actorhub.get([a, b]) == [5, -5]
    x, y, z = add.options(num_returns=3).remote((1,), (2, 3))
    assert actorhub.get([x, y, z]) == [1, 2, 3]
    with pytest.raises(ValueError, match="max_retries"):
        add.options(max_retries=-7)
    with pytest.raises(TypeError):
        add(1, 2)


def test_tasks_run_in_parallel_up_to_the_node_cpus() -> None:
    # the module cluster has 2 CPUs: 2 one-second naps take about a second, 4 about two
    start = time.monotonic()
    actorhub.get([nap.remote(1.0) for _ in range(2)])
    assert time.monotonic() - start < 1.8
    start = time.monotonic()
    actorhub.get([nap.remote(0.5) for _ in range(4)])
    assert 0.95 < time.monotonic() - start < 2.5


@actorhub.remote
def interval(seconds: float) -> tuple[float, float]:
    start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
    time.sleep(seconds)
    return start, time.monotonic()


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    # Overlaps shorter than 0.1 s are the hand-over between one task and the next.
    return max(sum(1 for s, e in intervals if s < t + 0.1 and e > t + 0.1) for t, _ in intervals)


@actorhub.remote
class CpuHolder:
    def ping(self) -> str:
        return "pong"


def test_cpus_reserved_by_actors_are_not_lent_to_tasks() -> None:
    assert most_at_once(actorhub.get([interval.remote(0.4) for _ in range(4)])) == 2  # both CPUs
    hog = CpuHolder.options(num_cpus=1).remote()  # holds one of the node's two CPUs
    actorhub.get(hog.ping.remote())
    time.sleep(1.5)  # the desk follows the hub's count every second
    assert most_at_once(actorhub.get([interval.remote(0.4) for _ in range(3)])) == 1
    actorhub.kill(hog)
    time.sleep(1.5)
    assert most_at_once(actorhub.get([interval.remote(0.4) for _ in range(4)])) == 2  # given back


@actorhub.remote
class _Started:
    def __init__(self) -> None:
        self.at = time.monotonic()

    def started(self) -> float:
        return self.at


@actorhub.remote
class _Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> None:
        self.n += 1

    def count(self) -> int:
        return self.n


@actorhub.remote
def _busy(tally: Any, seconds: float) -> tuple[float, float]:
    start = time.monotonic()
    tally.add.remote()
    time.sleep(seconds)
    return start, time.monotonic()


def test_an_actor_that_reserves_cpus_waits_for_the_tasks_holding_them() -> None:
    tally = _Tally.remote()
    busy = [_busy.remote(tally, 2.0) for _ in range(2)]  # both of the node's CPUs
    deadline = time.monotonic() + 30
    while actorhub.get(tally.count.remote()) < 2:
        assert time.monotonic() < deadline, "the tasks did not start"
        time.sleep(0.05)
    # The hub knows the desk lent both CPUs: the actor waits for them (it used to start at once,
    # on CPUs that tasks were using).
    holder = _Started.options(num_cpus=2).remote()
    started = actorhub.get(holder.started.remote(), timeout=60)
    ended = max(end for _, end in actorhub.get(busy))
    assert started >= ended - 0.05, f"the actor started {ended - started:.2f} s before the tasks gave their CPUs back"
    actorhub.kill(holder)
    time.sleep(1.5)  # the desk learns of it within a second
    assert most_at_once(actorhub.get([interval.remote(0.4) for _ in range(4)])) == 2  # given back


def test_short_tasks_ride_the_leases_held_without_asking_for_more() -> None:
    from actorhub.api.cluster import connected_runtime
    from actorhub.namespaces.lookup import get_system_actor
    from actorhub.tasks.lease_desk import desk_name

    assert actorhub.get(add.remote(0, 0)) == 0  # the node's desk exists from the first task on
    # The system namespace is reserved (get_actor refuses it): the internal lookup finds the desk.
    desk = get_system_actor(connected_runtime(), desk_name(actorhub.get_runtime_context().get_node_id()))
    time.sleep(0.5)  # earlier leases go back
    before = actorhub.get(desk.stats.remote())
    for _ in range(3):  # the batches after the first find the leases held, busy or idle
        assert actorhub.get([add.remote(i, 1) for i in range(300)]) == list(range(1, 301))
    after = actorhub.get(desk.stats.remote())
    # Two leases take both CPUs. A request for a third, which no desk could grant, used to keep
    # every lease one task deep: each task waited for the one before it to come back.
    assert after["queued_total"] == before["queued_total"], (before, after)


def test_dependencies_resolve_before_running_and_nested_refs_stay_refs() -> None:
    slow = nap.remote(0.3)
    chained = add.remote(slow, 1)  # submitted at once, runs when `slow` is ready
    assert actorhub.get(chained) == 1.3

    @actorhub.remote
    def first_of(refs: list[Any]) -> Any:
        assert isinstance(refs[0], actorhub.ObjectRef)
        return actorhub.get(refs[0])

    assert actorhub.get(first_of.remote([actorhub.put(41)])) == 41


def test_a_failing_dependency_fails_every_task_downstream_naming_it() -> None:
    bad = fail.remote("upstream")
    middle = add.remote(bad, 1)
    last = add.remote(middle, 1)
    for ref in (bad, middle, last):
        with pytest.raises(KeyError) as info:
            actorhub.get(ref)
        assert isinstance(info.value, TaskError)
        assert "fail" in info.value.function_name and "upstream" in str(info.value)


def test_tasks_and_actors_mix() -> None:
    @actorhub.remote
    class Total:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            self.n += k
            return self.n

    @actorhub.remote
    def work(total: Any, k: int) -> int:
        inner = add.remote(k, 0)  # a task submitting a task and waiting on it
        return actorhub.get(total.add.remote(actorhub.get(inner)))

    @actorhub.remote
    def make_actor() -> Any:
        return Total.remote()

    total = actorhub.get(make_actor.remote())
    actorhub.get([work.remote(total, k) for k in range(1, 5)])
    assert actorhub.get(total.add.remote(0)) == 10


def test_tree_of_tasks_waiting_on_subtasks_does_not_deadlock() -> None:
    @actorhub.remote
    def tree_sum(values: list[int]) -> int:
        if len(values) == 1:
            return values[0]
        mid = len(values) // 2
        return sum(actorhub.get([tree_sum.remote(values[:mid]), tree_sum.remote(values[mid:])]))

    assert actorhub.get(tree_sum.remote(list(range(16))), timeout=60) == sum(range(16))


def test_a_task_waiting_in_a_thread_it_started_lends_its_cpu_too() -> None:
    @actorhub.remote
    def leaf(x: int) -> int:
        return x

    @actorhub.remote
    def waits_in_threads(depth: int) -> int:
        import concurrent.futures

        if depth == 0:
            return 1
        # The waits happen on threads of the task, not the thread running it: the CPU must be
        # lent all the same, or the subtasks of a tree wider than the node's CPUs never run.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            parts = pool.map(lambda _: actorhub.get(waits_in_threads.remote(depth - 1)), range(2))
            return sum(parts) + actorhub.get(leaf.remote(0))

    assert actorhub.get(waits_in_threads.remote(3), timeout=60) == 8


def test_worker_death_is_retried(tmp_path: Path) -> None:
    marker = tmp_path / "attempts"

    @actorhub.remote(max_retries=3)
    def flaky(how: str) -> int:
        with open(marker, "a") as f:
            f.write("x")
        attempts = len(marker.read_text())
        if attempts < 3:
            if how == "exit":
                sys.exit(1)
            if how == "_exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        return attempts

    for how in ("exit", "_exit", "kill"):
        marker.write_text("")
        assert actorhub.get(flaky.remote(how), timeout=60) == 3


def test_worker_crashed_error_after_max_retries() -> None:
    @actorhub.remote(max_retries=1)
    def always_dies() -> None:
        os._exit(1)

    with pytest.raises(WorkerCrashedError, match="max_retries=1"):
        actorhub.get(always_dies.remote(), timeout=60)


def test_retry_exceptions(tmp_path: Path) -> None:
    marker = tmp_path / "n"
    marker.write_text("")

    @actorhub.remote
    def shaky(kind: str) -> int:
        with open(marker, "a") as f:
            f.write("x")
        if len(marker.read_text()) < 3:
            raise ConnectionError("try again") if kind == "conn" else ValueError("bad")
        return len(marker.read_text())

    assert actorhub.get(shaky.options(retry_exceptions=True).remote("conn")) == 3
    marker.write_text("")
    assert actorhub.get(shaky.options(retry_exceptions=[ConnectionError]).remote("conn")) == 3
    marker.write_text("")
    with pytest.raises(ValueError):  # not in the list: no retry
        actorhub.get(shaky.options(retry_exceptions=[ConnectionError]).remote("value"))
    assert marker.read_text() == "x"
    marker.write_text("")
    with pytest.raises(ConnectionError):  # application errors are not retried by default
        actorhub.get(shaky.remote("conn"))


def test_cancel_pending_running_and_forced(tmp_path: Path) -> None:
    ran = tmp_path / "ran"

    @actorhub.remote
    def spin() -> int:
        n = 0
        while True:
            n += 1

    @actorhub.remote
    def mark() -> None:
        ran.write_text("yes")

    # both CPUs busy: `queued` waits for a lease and must never run once cancelled
    blockers = [spin.remote() for _ in range(2)]
    time.sleep(0.5)
    queued = mark.remote()
    actorhub.cancel(queued)
    with pytest.raises(TaskCancelledError):
        actorhub.get(queued, timeout=30)
    actorhub.cancel(blockers[0])  # running: interrupted at its next instruction
    with pytest.raises(TaskCancelledError):
        actorhub.get(blockers[0], timeout=30)
    actorhub.cancel(blockers[1], force=True)  # running: its worker is killed
    with pytest.raises(TaskCancelledError):
        actorhub.get(blockers[1], timeout=30)
    time.sleep(0.3)
    assert not ran.exists()
    assert actorhub.get(add.remote(1, 1), timeout=30) == 2  # the leases are usable again


def test_owner_death_makes_get_raise_owner_died(cluster_address_env: dict[str, str]) -> None:
    @actorhub.remote
    class Keeper:
        def keep(self, refs: list[Any]) -> None:
            self.refs = refs

        def read(self) -> Any:
            return actorhub.get(self.refs[0], timeout=30)

    keeper = Keeper.options(name="keeper", lifetime="detached").remote()
    from _drivers import run_driver

    namespace = actorhub.get_runtime_context().namespace
    run_driver(
        f"""
        import actorhub
        actorhub.init(address="auto", namespace={namespace!r})
        keeper = actorhub.get_actor("keeper")
        ref = actorhub.put("owned by a driver that is about to exit")
        actorhub.get(keeper.keep.remote([ref]))
        """,
        **cluster_address_env,
    )
    with pytest.raises(OwnerDiedError):
        actorhub.get(keeper.read.remote(), timeout=60)
    actorhub.kill(keeper)


@pytest.fixture
def cluster_address_env(shared_cluster: actorhub.ClusterContext) -> dict[str, str]:
    return {"ACTORHUB_SESSION_ROOT": str(Path(shared_cluster.session_dir).parent)}


def test_nodes_and_resources_as_ray_reports_them() -> None:
    [node] = actorhub.nodes()
    assert node["Alive"] and node["NodeID"] == actorhub.get_runtime_context().get_node_id()
    assert node["Resources"]["CPU"] == 2.0 and node["Resources"]["object_store_memory"] > 0
    total = actorhub.cluster_resources()
    assert total["CPU"] == 2.0 and total[f"node:{node['NodeManagerAddress']}"] == 1.0
    running = interval.remote(2.0)
    deadline = time.monotonic() + 10
    while actorhub.available_resources()["CPU"] != 1.0:  # one CPU leased to the task
        assert time.monotonic() < deadline, actorhub.available_resources()
        time.sleep(0.05)
    actorhub.get(running)
    deadline = time.monotonic() + 10
    while actorhub.available_resources()["CPU"] != 2.0:  # the lease went back
        assert time.monotonic() < deadline, actorhub.available_resources()
        time.sleep(0.05)
