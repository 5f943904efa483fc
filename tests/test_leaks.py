"""Issue 8's leaks: what an actor starts ends with it, and a driver forgets dead actors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorhub
from actorhub.exceptions import ActorDiedError
from actorhub.runtime import runtime as runtime_module

# An argument no other process on the machine is likely to run with.
_SLEEP = ["sleep", "7331"]


@actorhub.remote
class Spawner:
    def spawn(self) -> int:
        return subprocess.Popen(_SLEEP, stdin=subprocess.DEVNULL).pid

    def pid(self) -> int:
        return os.getpid()

    def crash(self) -> None:
        os._exit(3)


@actorhub.remote
def spawn_in_task() -> int:
    return subprocess.Popen(_SLEEP, stdin=subprocess.DEVNULL).pid


@actorhub.remote
class Echo:
    def ping(self) -> str:
        return "pong"


def _running(pid: int) -> bool:
    """Our sleep still runs (not a zombie, and not a stranger that reused its pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and cmdline.split(b"\0")[:2] == [s.encode() for s in _SLEEP]


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """The sleeps a test started: whatever outlives it is killed, so a failure leaks nothing."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _running(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _describe(pid: int) -> str:
    """What /proc says of `pid`, for a failure message."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:4]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError as e:
        return f"pid {pid}: {e!r}"
    return f"pid {pid}: state, ppid, pgrp, session {state}, cmdline {cmdline!r}"


def test_kill_ends_the_actors_children(cluster: actorhub.ClusterContext, spawned: list[int]) -> None:
    actor = Spawner.remote()
    # A sleep just started was, twice in CI runs of the whole suite, not seen running at once (the
    # cause is not known; never reproduced alone). What is checked here is that kill() ends the
    # children that do run; each attempt that was not seen running is reported if all fail.
    not_running = []
    for _ in range(3):
        spawned.append(child := actorhub.get(actor.spawn.remote(), timeout=30))
        if _running(child):
            break
        not_running.append(_describe(child))
    else:
        pytest.fail("no child the actor started was seen running: " + "; ".join(not_running))
    actorhub.kill(actor)
    assert _wait_gone(child)


def test_restarts_end_the_old_processes_children(cluster: actorhub.ClusterContext, spawned: list[int]) -> None:
    actor = Spawner.options(max_restarts=2).remote()
    spawned.append(first := actorhub.get(actor.spawn.remote(), timeout=30))
    actorhub.kill(actor, no_restart=False)  # a kill that restarts
    assert _wait_gone(first)
    # A worker that exits on its own takes its children too.
    deadline = time.monotonic() + 30
    while True:
        try:
            spawned.append(second := actorhub.get(actor.spawn.remote(), timeout=30))
            break
        except ActorDiedError:  # a call that raced the restart
            assert time.monotonic() < deadline
    with pytest.raises(ActorDiedError):
        actorhub.get(actor.crash.remote(), timeout=30)
    assert _wait_gone(second)
    assert actorhub.get(actor.pid.remote(), timeout=30) > 0  # restarted again


def test_shutdown_ends_actor_and_task_children(cluster: actorhub.ClusterContext, spawned: list[int]) -> None:
    actor = Spawner.remote()
    spawned.append(from_actor := actorhub.get(actor.spawn.remote(), timeout=30))
    spawned.append(from_task := actorhub.get(spawn_in_task.remote(), timeout=30))
    assert _running(from_actor) and _running(from_task)
    actorhub.shutdown()
    assert _wait_gone(from_actor)
    assert _wait_gone(from_task)


def test_drivers_forget_connections_to_dead_actors(cluster: actorhub.ClusterContext) -> None:
    runtime = runtime_module.current()
    before = runtime.connection_count()
    channels_before = runtime.channels.count()
    killed: list[actorhub.ActorHandle[Echo]] = []
    for _ in range(10):
        batch = [Echo.remote() for _ in range(20)]
        assert actorhub.get([a.ping.remote() for a in batch], timeout=60) == ["pong"] * 20
        for actor in batch:
            actorhub.kill(actor)
        killed.extend(batch)
    deadline = time.monotonic() + 30
    while runtime.connection_count() > before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.connection_count() <= before + 5
    # Nor a channel to each dead actor's worker (a soak found ~10 KiB left per actor).
    assert runtime.channels.count() <= channels_before + 5
    # A handle to a killed actor still fails its calls as before, and leaves nothing behind.
    for actor in (killed[0], killed[-1]):
        with pytest.raises(ActorDiedError):
            actorhub.get(actor.ping.remote(), timeout=30)
    # The hub still knows them: the error carries the death cause, not an unknown actor.
    with pytest.raises(ActorDiedError, match="kill"):
        actorhub.get(killed[-1].ping.remote(), timeout=30)
    deadline = time.monotonic() + 30
    while runtime.connection_count() > before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.connection_count() <= before + 5
