"""TaskExecutor: the actor a leased worker runs tasks in, one at a time.

It runs with a few threads so that a `cancel` call can reach it while a task runs; a lock
keeps tasks themselves to one at a time, because a lease is one task's worth of CPU.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from actorhub.exceptions import TaskCancelledError
from actorhub.runtime import serialization as _serialization
from actorhub.runtime.runtime import current, set_blocking_hooks
from actorhub.worker.mailbox import resolve_arguments


class TaskExecutor:
    def __init__(self, desk_name: str, namespace: str) -> None:
        self._desk_name = desk_name
        self._namespace = namespace
        self._desk: Any = None
        self._lock = threading.Lock()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._running: dict[int, int] = {}  # task seq -> thread ident
        self._cancelled: set[int] = set()
        # The worker's runtime, built at StartActor before this constructor ran.
        self._runtime = current()
        # While a task runs here, a get() that must wait lends its CPU back (see _blocked).
        self._waits = 0  # get()s waiting now, on any thread of this process
        self._waits_lock = threading.Lock()  # also orders the block/unblock calls sent
        set_blocking_hooks((self._blocked, self._unblocked))

    def execute(self, fn_id: str, fn_blob: bytes, task_seq: int, args_blob: bytes) -> Any:
        function = self._functions.get(fn_id)
        if function is None:
            function = self._functions[fn_id] = _serialization.loads(fn_blob)
        # The submitter waited for the refs among them before sending the task: reading is quick.
        args, kwargs = resolve_arguments(args_blob, self._runtime.get_value)
        with self._lock:
            if task_seq in self._cancelled:
                raise TaskCancelledError(f"task {task_seq} was cancelled before it started")
            self._running[task_seq] = threading.get_ident()
            try:
                return function(*args, **kwargs)
            except SystemExit as e:
                # As in Ray, sys.exit() in a task ends its worker: a crash the caller may retry.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(e.code if isinstance(e.code, int) else 1)
            finally:
                del self._running[task_seq]

    def cancel(self, task_seq: int) -> bool:
        """Interrupt the task if it runs here (at its next Python instruction); True if it did."""
        ident = self._running.get(task_seq)
        if ident is None:
            self._cancelled.add(task_seq)
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(TaskCancelledError))
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
