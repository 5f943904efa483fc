"""Which task the calling code runs in, for get_runtime_context() (set by the task executor).

A task executor is a system actor shared by the tasks of many jobs: code inside a task belongs
to the task's job and namespace, not to the executor's (`job_id_of`, `namespace_of`).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunningTask:
    task_id: str
    """The task's id: its results' ids without their index ("<submitter>.t<seq>")."""
    name: str
    num_cpus: float
    job_id: str = ""
    """The job that submitted it ("": the executor's own)."""
    namespace: str = ""
    """Its job's namespace ("": the executor's own)."""
    resources: tuple[tuple[str, float], ...] = ()
    """What it holds besides CPUs ("GPU", "memory", custom names)."""
    gpu_ids: tuple[int, ...] = ()
    """The node's GPUs it was given (its CUDA_VISIBLE_DEVICES while it runs)."""


class _JobHolder(Protocol):
    @property
    def job_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...


# A ContextVar, not a global: threads and coroutines a task starts see it, its executor's other
# threads (a cancel arriving) do not.
_running: ContextVar[RunningTask | None] = ContextVar("actorhub_running_task", default=None)


def running_task() -> RunningTask | None:
    return _running.get()


def enter(task: RunningTask) -> Token[RunningTask | None]:
    return _running.set(task)


def leave(token: Token[RunningTask | None]) -> None:
    _running.reset(token)


def job_id_of(runtime: _JobHolder) -> str:
    """The job the calling code works for: the running task's, else the runtime's."""
    task = _running.get()
    return task.job_id if task is not None and task.job_id else runtime.job_id


def namespace_of(runtime: _JobHolder) -> str:
    """The namespace the calling code works in: the running task's job's, else the runtime's."""
    task = _running.get()
    return task.namespace if task is not None and task.namespace else runtime.namespace
