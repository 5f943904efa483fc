"""`actorhub.actor` and an actor ending itself: exit_actor() and sys.exit(), as in Ray."""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from _procs import gone
from _wait import wait_for

import actorhub
from actorhub.exceptions import ActorDiedError, TaskError
from actorhub.runtime.runtime import current

pytestmark = pytest.mark.usefixtures("shared_cluster")


def _info(handle: actorhub.ActorHandle) -> tuple[str, str, int]:
    info = current().hub.actor_info(handle.actor_id)
    return info.state, info.death_cause, info.num_restarts


def _dead_for_good(handle: actorhub.ActorHandle, pid: int, cause: str) -> None:
    wait_for(lambda: gone(pid), f"the actor's process {pid} to exit", 20)
    wait_for(lambda: _info(handle)[0] == "DEAD", "the hub to mark the actor DEAD", 20)
    _, death_cause, restarts = _info(handle)
    assert cause in death_cause and "exited intentionally" in death_cause
    assert restarts == 0
    with pytest.raises(ActorDiedError, match="exited intentionally"):
        actorhub.get(handle.pid.remote(), timeout=30)


@actorhub.remote(max_restarts=2)
class Quitter:
    def __init__(self, marker: str = "") -> None:
        if marker:
            atexit.register(lambda: Path(marker).write_text("atexit ran"))

    def pid(self) -> int:
        return os.getpid()

    def quit(self) -> None:
        actorhub.actor.exit_actor()

    def slow_then_quit(self, seconds: float) -> None:
        time.sleep(seconds)
        actorhub.actor.exit_actor()

    def sys_exit(self, code: int | None) -> None:
        sys.exit(code) if code is not None else sys.exit()


def test_the_actor_module() -> None:
    from actorhub.actor import ActorClass, ActorHandle, ActorMethod, exit_actor

    assert actorhub.actor.ActorHandle is actorhub.ActorHandle
    assert ActorClass is actorhub.ActorClass and ActorMethod is actorhub.ActorMethod
    assert isinstance(Quitter, ActorClass)
    assert callable(exit_actor) and ActorHandle is not None


def test_exit_actor_ends_it_for_good_and_runs_atexit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit"
    q = Quitter.remote(str(marker))
    pid = actorhub.get(q.pid.remote())
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        actorhub.get(q.quit.remote(), timeout=30)
    _dead_for_good(q, pid, "exit_actor() was called in Quitter.quit")
    assert marker.read_text() == "atexit ran"


def test_queued_calls_fail_and_never_run() -> None:
    q = Quitter.remote()
    pid = actorhub.get(q.pid.remote())
    first = q.slow_then_quit.remote(0.5)
    queued = [q.pid.remote() for _ in range(200)]
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        actorhub.get(first, timeout=30)
    for ref in queued:
        with pytest.raises(ActorDiedError, match="exited intentionally"):
            actorhub.get(ref, timeout=30)
    _dead_for_good(q, pid, "Quitter.slow_then_quit")


def test_many_callers_see_the_same_death() -> None:
    q = Quitter.remote()
    pid = actorhub.get(q.pid.remote())
    errors: list[BaseException] = []

    def caller() -> None:
        for _ in range(50):
            try:
                actorhub.get(q.pid.remote(), timeout=30)
            except ActorDiedError as e:
                errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    with pytest.raises(ActorDiedError):
        actorhub.get(q.quit.remote(), timeout=30)
    for t in threads:
        t.join()
    assert all("exited intentionally" in str(e) for e in errors)
    _dead_for_good(q, pid, "Quitter.quit")


def test_sys_exit_zero_is_an_intentional_exit() -> None:
    for code in (None, 0):
        q = Quitter.remote()
        pid = actorhub.get(q.pid.remote())
        with pytest.raises(ActorDiedError, match=r"sys.exit\("):
            actorhub.get(q.sys_exit.remote(code), timeout=30)
        _dead_for_good(q, pid, "Quitter.sys_exit called sys.exit")


def test_sys_exit_with_a_failure_code_is_a_crash_and_restarts() -> None:
    q = Quitter.remote()
    pid = actorhub.get(q.pid.remote())
    with pytest.raises(ActorDiedError):
        actorhub.get(q.sys_exit.remote(3), timeout=30)
    new_pid = actorhub.get(q.pid.remote(), timeout=30)  # restarted (max_restarts=2)
    assert new_pid != pid
    assert _info(q)[2] == 1


@actorhub.remote(max_concurrency=4, max_restarts=2)
class ThreadedQuitter:
    def __init__(self) -> None:
        self.finished = 0

    def pid(self) -> int:
        return os.getpid()

    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        return "finished"

    def quit(self) -> None:
        actorhub.actor.exit_actor()


def test_threaded_actor_finishes_calls_under_way() -> None:
    q = ThreadedQuitter.remote()
    pid = actorhub.get(q.pid.remote())
    running = q.work.remote(1.0)
    time.sleep(0.3)
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        actorhub.get(q.quit.remote(), timeout=30)
    assert actorhub.get(running, timeout=30) == "finished"
    _dead_for_good(q, pid, "ThreadedQuitter.quit")


@actorhub.remote(max_restarts=2)
class AsyncQuitter:
    def __init__(self, marker: str = "") -> None:
        if marker:
            atexit.register(lambda: Path(marker).write_text("async atexit ran"))

    async def pid(self) -> int:
        return os.getpid()

    async def work(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "finished"

    async def quit(self) -> None:
        actorhub.actor.exit_actor()

    async def sys_exit(self) -> None:
        await asyncio.sleep(0)
        sys.exit(0)

    async def quit_swallowed(self) -> str:
        try:
            actorhub.actor.exit_actor()
        except BaseException as e:  # AsyncioActorExit, as Ray raises it in a coroutine
            return type(e).__name__
        return "nothing raised"


def test_async_actor_exit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit"
    q = AsyncQuitter.remote(str(marker))
    pid = actorhub.get(q.pid.remote())
    assert actorhub.get(q.quit_swallowed.remote()) == "AsyncioActorExit"
    running = q.work.remote(1.0)
    time.sleep(0.2)
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        actorhub.get(q.quit.remote(), timeout=30)
    assert actorhub.get(running, timeout=30) == "finished"
    _dead_for_good(q, pid, "AsyncQuitter.quit")
    assert marker.read_text() == "async atexit ran"


def test_exit_actor_outside_an_actor_raises_type_error() -> None:
    with pytest.raises(TypeError, match="outside an actor"):
        actorhub.actor.exit_actor()

    @actorhub.remote
    def task() -> None:
        actorhub.actor.exit_actor()

    with pytest.raises(TaskError, match="outside an actor") as info:
        actorhub.get(task.remote(), timeout=60)
    assert isinstance(info.value, TypeError)


def test_sys_exit_in_a_coroutine_is_an_intentional_exit() -> None:
    q = AsyncQuitter.remote()
    pid = actorhub.get(q.pid.remote())
    with pytest.raises(ActorDiedError, match=r"sys.exit\(0\)"):
        actorhub.get(q.sys_exit.remote(), timeout=30)
    _dead_for_good(q, pid, "AsyncQuitter.sys_exit")
