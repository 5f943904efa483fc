"""Which task the calling code runs in, for get_runtime_context() (set by the task executor)."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningTask:
    task_id: str
    """The task's id: its results' ids without their index ("<submitter>.t<seq>")."""
    name: str
    num_cpus: float


# A ContextVar, not a global: threads and coroutines a task starts see it, its executor's other
# threads (a cancel arriving) do not.
_running: ContextVar[RunningTask | None] = ContextVar("actorhub_running_task", default=None)


def running_task() -> RunningTask | None:
    return _running.get()


def enter(task: RunningTask) -> Token[RunningTask | None]:
    return _running.set(task)


def leave(token: Token[RunningTask | None]) -> None:
    _running.reset(token)
