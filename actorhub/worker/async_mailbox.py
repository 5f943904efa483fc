"""The mailbox of an async actor: its calls run interleaved on an event loop of its own.

Split from mailbox.py (the actor instance, serial and threaded mailboxes), whose protocol it
follows. At most `max_concurrency` calls run at once; a call cancelled while it runs has its
coroutine cancelled (asyncio.CancelledError inside the method), as in Ray.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from actorhub._proto.v1 import worker_pb2
from actorhub.wire.errors import error_to_proto
from actorhub.wire.io_affinity import release_current_thread
from actorhub.worker.mailbox import ActorInstance
from actorhub.worker.reply_stream import ReplyStream

log = logging.getLogger(__name__)


class AsyncMailbox:
    """Runs calls interleaved on the actor's event loop, at most `max_concurrency` at once."""

    def __init__(self, actor: ActorInstance, max_concurrency: int) -> None:
        self._actor = actor
        self.loop = asyncio.new_event_loop()
        self._limit = max_concurrency
        # On the loop only. Its tasks are strong references: asyncio keeps only weak ones.
        self._calls_running: set[asyncio.Task[None]] = set()
        # On the loop only: the calls past the concurrency limit now, by (stream, seq), to cancel.
        self._executing: dict[tuple[ReplyStream, int], asyncio.Task[Any]] = {}
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="actorhub-actor-loop", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run_loop(self, ready: threading.Event) -> None:
        release_current_thread()  # started from the loop's thread, whose one CPU it inherited
        asyncio.set_event_loop(self.loop)
        self._semaphore = asyncio.Semaphore(self._limit)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    async def _run(self, call: worker_pb2.Call, stream: ReplyStream) -> None:
        reply = worker_pb2.Reply()
        async with self._semaphore:
            if self._actor.exit_reason:
                if self._actor.refusal is not None:
                    stream.post(worker_pb2.Reply(seq=call.seq, error=self._actor.refusal))
                return  # the actor is ending: as _run_one
            if stream.answered(call.seq):
                stream.skip(call.seq)  # cancelled while queued
                return
            key = (stream, call.seq)
            self._executing[key] = asyncio.current_task()  # type: ignore[assignment]
            try:
                await self._actor.execute_async(call, reply, stream.caller, stream.post_item)
            except BaseException as e:  # our own bug: the call still gets an answer
                log.exception("async actor call %s failed outside the method", call.method)
                reply = worker_pb2.Reply(seq=call.seq, error=error_to_proto(e, tb=e.__traceback__))
            finally:
                del self._executing[key]
        stream.post(reply)

    def interrupt(self, stream: ReplyStream, seqs: Sequence[int]) -> None:
        self.loop.call_soon_threadsafe(self._cancel_tasks, stream, list(seqs))

    def _cancel_tasks(self, stream: ReplyStream, seqs: list[int]) -> None:
        # asyncio.CancelledError inside the method; its reply was given (TaskCancelledError).
        for seq in seqs:
            task = self._executing.get((stream, seq))
            if task is not None:
                task.cancel()

    def _start(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        calls_running = self._calls_running
        for call in calls:
            task = self.loop.create_task(self._run(call, stream))
            calls_running.add(task)
            task.add_done_callback(calls_running.discard)

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        self.loop.call_soon_threadsafe(self._start, calls, stream)

    def finish(self, last: Callable[[], None], timeout: float) -> None:
        async def calls_ended() -> None:
            # Only calls: tasks the actor started itself may run forever.
            if self._calls_running:
                await asyncio.wait(list(self._calls_running), timeout=timeout)

        try:
            asyncio.run_coroutine_threadsafe(calls_ended(), self.loop).result(timeout + 1)
        except concurrent.futures.TimeoutError:
            log.warning("the actor's calls did not end within %.0f s of its exit", timeout)
        # Off the loop: an async __ray_shutdown__ gets a loop of its own (clean_exit.py).
        last()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
