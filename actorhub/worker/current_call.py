"""Which call an actor's code runs, for get_runtime_context(): `is_canceled()`, `get_task_id()`
and `get_task_name()` inside an actor method, as Ray has them.

A cancelled call that already runs in a thread is left to finish (worker/service.py, `_cancel`);
the method may look here to stop early. Per thread: a threaded actor runs several calls at once.
Async actors have asyncio's own cancellation instead, as in Ray; their running call is kept in a
ContextVar of the call's own task.

Only references are stored per call (the call's message and its stream); its id and name are
made when asked for, so a call pays nothing for them.
"""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar

from actorhub._proto.v1 import worker_pb2
from actorhub.worker.reply_stream import Caller, ReplyStream

_local = threading.local()
_async_call: ContextVar[tuple[Caller, worker_pb2.Call] | None] = ContextVar("actorhub_actor_call", default=None)


_class_name = ""


def set_actor(class_name: str) -> None:
    """Once, as the actor starts: its class, which names its calls."""
    global _class_name
    _class_name = class_name


def enter(stream: ReplyStream, call: worker_pb2.Call) -> None:
    _local.stream = stream
    _local.call = call


def leave() -> None:
    _local.stream = None


def enter_async(caller: Caller, call: worker_pb2.Call) -> None:
    """In an async call's own task (its context is a copy: nothing to reset)."""
    _async_call.set((caller, call))


def call_id() -> str | None:
    """The running call's id, as its caller named its result ("<caller>.<seq>"); None outside a call."""
    running = _running()
    return f"{running[0].caller_id}.{running[1].seq:x}" if running is not None else None


def call_name() -> str | None:
    """"Class.method" of the running call; None outside a call."""
    running = _running()
    return f"{_class_name}.{running[1].method}" if running is not None else None


def _running() -> tuple[Caller, worker_pb2.Call] | None:
    stream: ReplyStream | None = getattr(_local, "stream", None)
    if stream is not None:
        call: worker_pb2.Call = _local.call
        return stream.caller, call
    return _async_call.get()


def is_cancelled() -> bool:
    """Whether the caller cancelled the actor call this thread runs (False outside a call)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "is_canceled() is not available in an async actor: a cancelled coroutine gets "
            "asyncio.CancelledError instead"
        )
    stream: ReplyStream | None = getattr(_local, "stream", None)
    return stream is not None and stream.answered(_local.call.seq)
