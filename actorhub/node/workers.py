"""A node's worker records: the state of each worker process, and a StartActor waiting for one.

Plain records, guarded by the WorkerPool's lock (worker_pool.py); a waiter is settled under
that lock and then woken on its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from dataclasses import dataclass


class State(enum.Enum):
    FORKING = "forking"  # ForkWorker sent, pid not known yet
    STARTING = "starting"  # forked, not registered yet
    IDLE = "idle"  # registered, waiting for an actor
    TAKEN = "taken"  # running an actor's constructor
    ACTOR = "actor"  # hosting an actor: its exit is reported to the hub


@dataclass(eq=False)
class Worker:
    worker_id: str
    forked_at: float
    state: State = State.FORKING
    pid: int = 0
    address: str = ""
    actor_id: str = ""
    incarnation: int = 0
    num_cpus: float = 0.0
    gpu_ids: tuple[int, ...] = ()  # the hub's, reported back when the node registers again
    exited: bool = False
    exit_code: int = 0
    signal: int = 0
    killed: bool = False  # we sent SIGKILL: its death is not a boot failure

    def describe_exit(self) -> str:
        if not self.exited:
            return "still running"
        if self.signal:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by signal {name}"
        return f"exit code {self.exit_code}"


class PoolError(Exception):
    """No worker could be provided (timeout, boot failures, or the node is stopping)."""


@dataclass(eq=False)
class Waiter:
    """A StartActor waiting for a worker. Settled under the pool's lock (a worker handed over,
    or why none will come), then woken on its loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    actor_id: str
    incarnation: int
    num_cpus: float
    since: float
    worker: Worker | None = None
    error: str = ""


def wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Complete `future` on its loop, from any thread (the loop's own included)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_set_done, future)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class Counts:
    idle: int = 0
    actors: int = 0
    cpus_in_use: float = 0.0
