"""Actor worker processes killed with SIGKILL: restarts, retries, and death."""

from __future__ import annotations

import os
import signal
import time

import pytest

import actorhub
from actorhub.exceptions import ActorDiedError, RayActorError

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote
class Stateful:
    def __init__(self) -> None:
        self.calls = 0

    def pid(self) -> int:
        return os.getpid()

    def incr(self) -> int:
        self.calls += 1
        return self.calls

    def sleep(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    def reconstructed(self) -> bool:
        return actorhub.get_runtime_context().was_current_actor_reconstructed


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _pid_after_restart(actor: actorhub.ActorHandle[Stateful], old: int) -> int:
    # A call sent before this process noticed the death was in flight on the old
    # incarnation and fails; calls after that reach the new one.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            pid = actorhub.get(actor.pid.remote(), timeout=30)
        except ActorDiedError:
            continue
        if pid != old:
            return pid
    raise AssertionError("the actor did not restart")


def test_sigkill_mid_call_without_retries_fails_the_call_then_restarts() -> None:
    a = Stateful.options(max_restarts=1).remote()
    pid = actorhub.get(a.pid.remote())
    assert actorhub.get(a.incr.remote()) == 1
    in_flight = a.sleep.remote(5)
    time.sleep(0.3)
    _kill(pid)
    with pytest.raises(ActorDiedError) as info:
        actorhub.get(in_flight, timeout=30)
    assert isinstance(info.value, RayActorError)
    # the restarted actor ran its constructor again: state starts over
    assert actorhub.get(a.incr.remote(), timeout=30) == 1
    assert actorhub.get(a.reconstructed.remote()) is True
    assert actorhub.get(a.pid.remote()) != pid


def test_sigkill_mid_call_with_max_task_retries_retries_on_new_incarnation() -> None:
    a = Stateful.options(max_restarts=2, max_task_retries=1).remote()
    pid = actorhub.get(a.pid.remote())
    in_flight = a.sleep.remote(1.0)
    queued = [a.incr.remote() for _ in range(5)]
    time.sleep(0.3)
    _kill(pid)
    assert actorhub.get(in_flight, timeout=30) == "slept"
    assert actorhub.get(queued, timeout=30) == [1, 2, 3, 4, 5]


def test_after_the_restart_budget_every_call_fails_fast_with_the_cause() -> None:
    a = Stateful.options(max_restarts=1).remote()
    first_pid = actorhub.get(a.pid.remote())
    _kill(first_pid)
    _kill(_pid_after_restart(a, first_pid))
    with pytest.raises(ActorDiedError) as info:
        actorhub.get(a.incr.remote(), timeout=30)
    assert "signal 9" in str(info.value) or "SIGKILL" in str(info.value)
    start = time.monotonic()
    for _ in range(20):
        with pytest.raises(ActorDiedError):
            actorhub.get(a.incr.remote(), timeout=30)
    assert time.monotonic() - start < 2.0


def test_no_restart_by_default() -> None:
    a = Stateful.remote()
    _kill(actorhub.get(a.pid.remote()))
    with pytest.raises(ActorDiedError, match=r"signal 9|SIGKILL"):
        actorhub.get(a.incr.remote(), timeout=30)


def test_unlimited_restarts() -> None:
    a = Stateful.options(max_restarts=-1).remote()
    pid = actorhub.get(a.pid.remote())
    for _ in range(4):
        _kill(pid)
        pid = _pid_after_restart(a, pid)
    assert actorhub.get(a.incr.remote(), timeout=30) == 1


def test_kill_with_restart_allowed_restarts_and_calls_after_kill_never_reach_old_process() -> None:
    a = Stateful.options(max_restarts=1).remote()
    old = actorhub.get(a.pid.remote())
    actorhub.kill(a, no_restart=False)
    assert actorhub.get(a.pid.remote(), timeout=30) != old
    actorhub.kill(a)
    with pytest.raises(ActorDiedError, match=r"kill\(\)"):
        actorhub.get(a.incr.remote(), timeout=30)


def test_restart_after_sigkill_is_fast() -> None:
    a = Stateful.options(max_restarts=-1).remote()
    times = []
    pid = actorhub.get(a.pid.remote())
    for _ in range(5):
        start = time.monotonic()
        _kill(pid)
        pid = _pid_after_restart(a, pid)
        times.append(time.monotonic() - start)
    # reported, not asserted tightly: speed targets live in benchmarks
    print(f"restart after SIGKILL: median {sorted(times)[2] * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert sorted(times)[2] < 5.0
