"""TaskExecutor: the actor a leased worker runs tasks in, one at a time.

It runs with a few threads so that a `cancel` call can reach it while a task runs; a lock
keeps tasks themselves to one at a time, because a lease is one task's worth of CPU.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

from actorhub.exceptions import TaskCancelledError
from actorhub.metrics.counts import TASKS
from actorhub.runtime import log_markers, placement_scope, task_context
from actorhub.runtime import serialization as _serialization
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.runtime import Runtime, current, set_blocking_hooks
from actorhub.worker.mailbox import resolve_arguments
from actorhub.worker.proc_title import set_title

_CUDA = "CUDA_VISIBLE_DEVICES"


class TaskExecutor:
    def __init__(self, desk_name: str, namespace: str) -> None:
        self._desk_name = desk_name
        self._namespace = namespace
        self._desk: Any = None
        self._lock = threading.Lock()
        self._functions: dict[str, Callable[..., Any]] = {}
        # By task id: task seqs are per submitter, and an executor serves many submitters in turn.
        self._running: dict[str, int] = {}  # task id -> thread ident
        self._cancelled: set[str] = set()
        # Running task id -> marks at its start: of its process's submitter and of its actor calls.
        self._child_marks: dict[str, tuple[int, int]] = {}
        self._cancelled_recursively: set[str] = set()
        # Guards the three above: held for moments only, unlike _lock, which a running task holds.
        self._cancel_lock = threading.Lock()
        # The worker's runtime, built at StartActor before this constructor ran.
        self._runtime = current()
        # While a task runs here, a get() that must wait lends its CPU back (see _blocked).
        self._waits = 0  # get()s waiting now, on any thread of this process
        self._waits_lock = threading.Lock()  # also orders the block/unblock calls sent
        set_blocking_hooks((self._blocked, self._unblocked))

    def execute(
        self, fn_id: str, fn_blob: bytes, task_seq: int, args_blob: bytes, job_id: str = "", task_name: str = "",
        task_id: str = "", num_cpus: float = 0.0, namespace: str = "", resources: dict[str, float] | None = None,
        gpu_ids: list[int] | None = None, placement_group: tuple[str, int, bool] | None = None,
    ) -> Any:
        """Run one task. `job_id` and `task_name` attribute its output (and its process title);
        actors it creates and looks up belong to `job_id` and its `namespace`. `resources`: what
        its lease holds besides CPUs, `gpu_ids` the GPUs among them (sent only when it has any)."""
        function = self._functions.get(fn_id)
        if function is None:
            function = self._functions[fn_id] = _serialization.loads(fn_blob)
        # The submitter waited for the refs among them before sending the task: reading is quick.
        args, kwargs = resolve_arguments(args_blob, self._runtime.get_value)
        name = task_name or getattr(function, "__name__", "task")
        held = (tuple(sorted(resources.items())), tuple(gpu_ids or ())) if resources else ((), ())
        running = task_context.RunningTask(task_id, name, num_cpus, job_id, namespace, *held)
        task = partial(self._task_running, task_seq, running, placement_group)
        TASKS.begin(name)  # published with the worker's metrics (metrics/worker_metrics.py)
        try:
            with task(), _tracing.span(f"task {name}"):
                result = function(*args, **kwargs)
        except BaseException:
            TASKS.end(name, ok=False)
            raise
        TASKS.end(name, ok=True)
        if inspect.isgenerator(result):
            # A generator task's body runs as its items are taken (worker/streaming.py): each
            # step runs as a task here, as the call did.
            return _stepped(result, task)
        return result

    @contextmanager
    def _task_running(
        self, task_seq: int, task: task_context.RunningTask, placement_group: tuple[str, int, bool] | None = None,
    ) -> Iterator[None]:
        """The task (or a step of a generator task) runs inside: one at a time, cancellable."""
        key = task.task_id or str(task_seq)
        name = task.name
        with self._lock:
            # Tasks this process submits from now on are the task's children, for a recursive cancel.
            mark = (_submitted_mark(self._runtime), self._runtime.actor_call_mark())
            # Checked and registered in one step under the cancel lock: a cancel arriving meanwhile
            # either finds the task running or leaves a note it sees here.
            with self._cancel_lock:
                if key in self._cancelled:
                    raise TaskCancelledError(f"task {name} was cancelled before it started")
                self._running[key] = threading.get_ident()
                self._child_marks[key] = mark
            # Its output goes to its job's driver (runtime/log_markers.py).
            log_markers.mark_task(task.job_id or self._runtime.job_id, name)
            set_title(name)
            # get_runtime_context() in the task (and the threads it starts) names it.
            running = task_context.enter(task)
            # The group it runs in: what it creates joins it if it captures (runtime/placement_scope.py).
            in_group = placement_scope.enter_task(*placement_group) if placement_group else None
            # As Ray's worker does per task: its GPUs are the ones CUDA libraries see meanwhile.
            cuda_before = _set_visible_gpus(task.gpu_ids) if task.resources else None
            try:
                yield
            except SystemExit as e:
                # As in Ray, sys.exit() in a task ends its worker: a crash the caller may retry.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(e.code if isinstance(e.code, int) else 1)
            finally:
                if task.resources:
                    _restore_visible_gpus(cuda_before)
                task_context.leave(running)
                if in_group is not None:
                    placement_scope.leave_task(in_group)
                with self._cancel_lock:
                    del self._running[key]
                    mark = self._child_marks.pop(key)
                    sweep = key in self._cancelled_recursively
                    self._cancelled_recursively.discard(key)
                if sweep:
                    # Children it submitted between the cancel and its interruption.
                    _cancel_children(self._runtime, mark, force=False)
                set_title("")

    def cancel(self, task_id: str, recursive: bool = True, force: bool = False) -> bool:
        """Interrupt the task if it runs here (at its next Python instruction); True if it did.

        `recursive`: also cancel the tasks it submitted that have not finished (a task blocked
        in get() on one of them sees the interrupt only once that one ends). `force`: its
        submitter kills this executor next, so only the children are cancelled here (forcibly too)."""
        with self._cancel_lock:
            ident = self._running.get(task_id)
            mark = self._child_marks.get(task_id)
            if ident is None or mark is None:
                self._cancelled.add(task_id)
                return False
            if recursive:
                self._cancelled_recursively.add(task_id)
        if not force:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(TaskCancelledError))
        if recursive:
            # After the interrupt is set: a task blocked in get() on a child sees it once the child ends.
            _cancel_children(self._runtime, mark, force)
        return True

    def _desk_handle(self) -> Any:
        if self._desk is None:
            from actorhub.api.actor_handle import ActorHandle, HandleState

            # wait_for_ready: under load the hub's channel may be reconnecting; wait, not fail.
            info = self._runtime.hub.get_named_actor(self._desk_name, self._namespace, wait_for_ready=True)
            self._desk = ActorHandle(HandleState.from_info(info), self._runtime)
        return self._desk

    # A task that waits in get() lends its CPU to other tasks until the wait ends. Lending is
    # an optimization of the node's CPU use: failing to tell the desk must not fail the task.
    # Waits are counted: threads the task started may wait at once, and the CPU is lent from
    # the first wait until the last one ends (the desk keeps one flag per executor; reclaiming
    # it when one thread of several resumed left the others' subtasks without a CPU).
    def _blocked(self) -> None:
        with self._waits_lock:
            self._waits += 1
            if self._waits == 1:
                self._tell_desk("block")

    def _unblocked(self) -> None:
        with self._waits_lock:
            self._waits -= 1
            if self._waits == 0:
                self._tell_desk("unblock")

    def _tell_desk(self, what: str) -> None:
        if not self._running:
            return
        try:
            getattr(self._desk_handle(), what).remote(self._runtime.actor_id)  # bound to self._runtime
        except Exception as e:
            print(f"actorhub: could not tell the lease desk '{what}': {e}", file=sys.stderr)


def _set_visible_gpus(gpu_ids: tuple[int, ...]) -> str | None:
    """CUDA_VISIBLE_DEVICES for a task given GPUs; what it was before."""
    before = os.environ.get(_CUDA)
    if gpu_ids:
        os.environ[_CUDA] = ",".join(str(i) for i in gpu_ids)
    return before


def _restore_visible_gpus(before: str | None) -> None:
    if before is None:
        os.environ.pop(_CUDA, None)
    else:
        os.environ[_CUDA] = before


def _stepped(items: Iterator[Any], task: Callable[[], AbstractContextManager[None]]) -> Iterator[Any]:
    """The items of a generator task, each step of its body run inside `task()`."""
    while True:
        with task():
            try:
                value = next(items)
            except StopIteration:
                return
        yield value


def _submitted_mark(runtime: Runtime) -> int:
    from actorhub.tasks.submitters import existing_submitter  # the submitter imports the executor's module

    submitter = existing_submitter(runtime)
    return submitter.mark if submitter is not None else 0


def _cancel_children(runtime: Runtime, marks: tuple[int, int], force: bool) -> None:
    """A recursive cancel: the tasks and actor calls the cancelled task made that have not
    finished, as Ray's (force applies to tasks only; an actor call cannot be forced)."""
    from actorhub.tasks.lease_desk import LeaseDesk
    from actorhub.tasks.submitters import existing_submitter

    task_mark, call_mark = marks
    submitter = existing_submitter(runtime)
    if submitter is not None:
        submitter.cancel_submitted_after(task_mark, force)
    # The calls to actorhub's own actors (its children's runs, the lease desks) are not the
    # task's: the submitter above cancels its children its own way.
    runtime.cancel_calls_after(call_mark, (TaskExecutor.__name__, LeaseDesk.__name__))
