"""Which call a thread of an actor runs, for `get_runtime_context().is_canceled()` (Ray's).

A cancelled call that already runs in a thread is left to finish (worker/service.py, `_cancel`);
the method may look here to stop early. Per thread: a threaded actor runs several calls at once.
Async actors have asyncio's own cancellation instead, as in Ray.
"""

from __future__ import annotations

import asyncio
import threading

from actorhub.worker.reply_stream import ReplyStream

_local = threading.local()


def enter(stream: ReplyStream, seq: int) -> None:
    _local.stream = stream
    _local.seq = seq


def leave() -> None:
    _local.stream = None


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
    return stream is not None and stream.answered(_local.seq)
