"""The actor's side of calls: one actor instance and the mailbox that runs its calls.

Mailboxes take calls from the server's event loop (which never runs user code) and run them on
the actor's own threads. The default is serial: one call at a time, on the thread that ran the
constructor, in arrival order, so calls from one caller keep their order (one stream carries
them in order into one queue) and calls from different callers interleave between calls, never
inside one. `max_concurrency > 1` runs calls on a thread pool and async actors run them on the
actor's own event loop (async_mailbox.py; groups.py picks the mailbox). Every mailbox replies
as each call finishes (see reply_stream.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import AsyncioActorExit
from actorhub.metrics.counts import CALLS
from actorhub.runtime import serialization as _serialization
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.actor_refs import OUT_OF_SCOPE_METHOD, OUT_OF_SCOPE_REASON
from actorhub.runtime.object_ref import (
    ObjectRef,
    begin_call,
    begin_unpickling_arguments,
    capturing_refs,
    end_call,
    end_unpickling_arguments,
)
from actorhub.wire.errors import ErrorKind, error_to_proto, system_error_info
from actorhub.wire.io_affinity import release_current_thread
from actorhub.wire.rpc import check_message_size
from actorhub.wire.worker import LentRef, add_contained
from actorhub.worker import actor_exit, current_call
from actorhub.worker.checkpoints import Checkpointer
from actorhub.worker.reply_stream import Caller, ReplyStream
from actorhub.worker.streaming import PostItem, run_stream, run_stream_async

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_ASYNC_CONCURRENCY = 1000
# What a result that travels in its reply has of a stored one: no store id, no bytes there.
_INLINE: tuple[str, int] = ("", 0)
# The death cause of an actor ended by __ray_terminate__, after "The actor <label> ".
TERMINATE_REASON = "exited through __ray_terminate__"


class Borrows(Protocol):
    def register_held(self, object_ids: list[str]) -> None: ...

    def lend(
        self, refs: list[tuple[int, ObjectRef[Any]]], borrower: str
    ) -> list[LentRef]: ...


class ReturnCheck(Protocol):
    def check_return(self, value: Any) -> None: ...


class CallHost(Protocol):
    """What running calls needs from the process runtime."""

    @property
    def borrowing(self) -> Borrows: ...

    @property
    def node_id(self) -> str: ...

    @property
    def actor_id(self) -> str: ...

    @property
    def max_message_bytes(self) -> int: ...

    def get_value(self, ref: ObjectRef[Any]) -> Any: ...

    def store_result(self, value: Any, owner: str, owner_node_id: str) -> tuple[str, int]: ...

    def discard_stored(self, store_ids: list[str]) -> None: ...

    def has_unsent_calls(self) -> bool: ...

    def send_submitted_calls(self) -> None: ...


class ActorInstance:
    """The user's object and how to run one call on it."""

    def __init__(self, instance: Any, class_name: str, host: CallHost) -> None:
        self.instance = instance
        self.class_name = class_name
        self._host = host
        self._methods: dict[str, Callable[..., Any]] = {}
        self.terminate_requested = threading.Event()
        # Set once the actor is ending gracefully: why (its death cause). Calls that have not
        # started by then never run; the hub's end of the process fails them for their callers.
        self.exit_reason = ""
        # Set with exit_reason by a drain that cannot move the actor (worker/drain.py): the
        # answer of each call that will not run, instead of none.
        self.refusal: common_pb2.ErrorInfo | None = None
        # A typed actor's methods (api/typed.py): what each returns is checked against its hint.
        self.return_checks: dict[str, ReturnCheck] | None = None
        # An actor that checkpoints its state (worker/checkpoints.py): told after each call.
        self.checkpointer: Checkpointer | None = None

    def request_exit(self, reason: str) -> None:
        """End the actor gracefully, for `reason` (see worker/service.py's _watch_terminate)."""
        if not self.exit_reason:
            self.exit_reason = reason
        self.terminate_requested.set()

    def method(self, name: str) -> Callable[..., Any]:
        bound = self._methods.get(name)
        if bound is None:
            if name == "__ray_ready__":
                bound = _ready
            elif name == "__ray_terminate__":
                bound = partial(self.request_exit, TERMINATE_REASON)
            elif name == OUT_OF_SCOPE_METHOD:
                bound = partial(self.request_exit, OUT_OF_SCOPE_REASON)
            else:
                bound = getattr(self.instance, name)
            self._methods[name] = bound
        return bound

    def arguments(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return resolve_arguments(data, self._host.get_value)

    def construct(self, cls: type, init_args: bytes) -> None:
        """Run the constructor; like a call, it registers the argument refs it keeps."""
        adopted, token = begin_call()
        try:
            args, kwargs = self.arguments(init_args)
            self.instance = cls(*args, **kwargs)
            del args, kwargs
        finally:
            end_call(token)
            if adopted:
                self._host.borrowing.register_held(adopted)

    def execute(
        self, call: worker_pb2.Call, reply: worker_pb2.Reply, caller: Caller, post_item: PostItem | None = None,
    ) -> None:
        """Run `call` and fill `reply` with its values or its error; a streaming call posts its
        items with `post_item` first (worker/streaming.py)."""
        reply.seq = call.seq
        adopted, token = begin_call()
        CALLS.started += 1
        try:
            if call.trace_context:
                with _tracing.execute_span(f"{self.class_name}.{call.method}", call.trace_context):
                    self._run(call, reply, caller, post_item)
            else:
                self._run(call, reply, caller, post_item)
        finally:
            end_call(token)
            CALLS.ended += 1
        self._host.send_submitted_calls()
        if adopted:
            # Before the reply goes: until then the caller keeps these refs alive.
            self._host.borrowing.register_held(adopted)
        if self.checkpointer is not None:
            self.checkpointer.after_call()  # before the reply goes too: a replied call is saved

    def _run(
        self, call: worker_pb2.Call, reply: worker_pb2.Reply, caller: Caller, post_item: PostItem | None
    ) -> None:
        try:
            args, kwargs = self.arguments(call.args)
            result = self.method(call.method)(*args, **kwargs)
            if self.return_checks is not None and call.method in self.return_checks:
                self.return_checks[call.method].check_return(result)
            if call.streaming and post_item is not None:
                # Its items go as yielded; an actor exit in the generator ends the call here.
                run_stream(self, self._host, call, result, reply, caller, post_item)
                return
        except BaseException as e:  # user code may raise anything; it becomes the call's result
            CALLS.failed += 1
            if isinstance(e, SystemExit):
                self._exit(e, call, reply)
                return
            reply.error.CopyFrom(error_to_proto(e, tb=_user_frames(e)))
            return
        self.fill(call, result, reply, caller)

    async def execute_async(
        self, call: worker_pb2.Call, reply: worker_pb2.Reply, caller: Caller, post_item: PostItem | None = None,
    ) -> None:
        reply.seq = call.seq
        # The coroutine runs in its own copy of the context: this call's list stays its own.
        adopted, _ = begin_call()
        current_call.enter_async(caller, call)
        CALLS.started += 1
        try:
            if call.trace_context:
                # The span stays current across the awaits: OpenTelemetry keeps it in the task's context.
                with _tracing.execute_span(f"{self.class_name}.{call.method}", call.trace_context):
                    await self._run_async(call, reply, caller, post_item)
            else:
                await self._run_async(call, reply, caller, post_item)
        finally:
            CALLS.ended += 1
        if self._host.has_unsent_calls():
            await asyncio.get_running_loop().run_in_executor(None, self._host.send_submitted_calls)
        if adopted:
            self._host.borrowing.register_held(adopted)
        if self.checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.checkpointer.after_call)

    async def _run_async(
        self, call: worker_pb2.Call, reply: worker_pb2.Reply, caller: Caller, post_item: PostItem | None
    ) -> None:
        try:
            unpickling = begin_unpickling_arguments()
            try:
                args, kwargs = _serialization.loads_args(call.args)
            finally:
                end_unpickling_arguments(unpickling)
            args = tuple([await _awaited(a) for a in args])
            kwargs = {k: await _awaited(v) for k, v in kwargs.items()}
            result = self.method(call.method)(*args, **kwargs)
            del args, kwargs
            if inspect.isawaitable(result):
                result = await result
            if self.return_checks is not None and call.method in self.return_checks:
                self.return_checks[call.method].check_return(result)
            if call.streaming and post_item is not None:
                await run_stream_async(self, self._host, call, result, reply, caller, post_item)
                return
        except BaseException as e:
            CALLS.failed += 1
            if isinstance(e, SystemExit | AsyncioActorExit):
                self._exit(e, call, reply)
                return
            reply.error.CopyFrom(error_to_proto(e, tb=_user_frames(e)))
            return
        self.fill(call, result, reply, caller)

    def _exit(self, e: BaseException, call: worker_pb2.Call, reply: worker_pb2.Reply) -> None:
        """The method ended the actor (exit_actor(), sys.exit()): see worker/actor_exit.py."""
        reason = actor_exit.intentional_reason(e, f"{self.class_name}.{call.method}")
        if reason is None:
            actor_exit.crash(e)  # sys.exit(nonzero): a crash, restarted within max_restarts
        self.request_exit(reason)
        reply.error.CopyFrom(
            system_error_info(f"The actor {self.class_name} ({self._host.actor_id}) {reason}", ErrorKind.ACTOR_DIED)
        )

    def fill(self, call: worker_pb2.Call, result: Any, reply: worker_pb2.Reply, caller: Caller) -> None:
        where = f"{self.class_name}.{call.method}"
        store_ids: list[str] = []
        store_sizes: list[int] = []
        try:
            n = call.num_returns
            if n == 0:
                return
            values: list[Any] = [result]
            if n > 1 and inspect.isgenerator(result):
                result = tuple(result)  # a generator yielding its num_returns values, as in Ray
            if n > 1:
                if not isinstance(result, tuple | list) or len(result) != n:
                    raise ValueError(
                        f"{where} was declared with num_returns={n} but returned "
                        f"{type(result).__name__} {result!r:.60}"
                    )
                values = list(result)
            lent: list[tuple[int, ObjectRef[Any]]] = []
            size = 0
            # A large value goes into this node's store, owned by the caller, which maps it
            # without a copy when on this node and has its own node pull it otherwise. A caller
            # with no node (so no store) gets it inline.
            for index, value in enumerate(values):
                data, (store_id, stored_bytes), refs = self._serialize(value, where, caller)
                size += len(data)
                # Refused here, as this call's error: over the limit, gRPC would fail the stream
                # and every other call on it.
                check_message_size(f"the return value of {where}", size, self._host.max_message_bytes)
                reply.values.append(data)
                store_ids.append(store_id)
                store_sizes.append(stored_bytes)
                lent.extend((index, ref) for ref in refs)
            if any(store_ids):
                reply.store_ids.extend(store_ids)
                reply.store_sizes.extend(store_sizes)
            if lent:
                # The caller may unpickle the value long after this process dropped its refs.
                add_contained(self._host.borrowing.lend(lent, caller.address), reply)
        except BaseException as e:
            CALLS.failed += 1
            del reply.values[:]
            del reply.store_ids[:]
            del reply.store_sizes[:]
            if any(store_ids):
                self._host.discard_stored([i for i in store_ids if i])
            reply.error.CopyFrom(error_to_proto(e, tb=e.__traceback__))


    def _serialize(
        self, value: Any, where: str, caller: Caller
    ) -> tuple[bytes, tuple[str, int], list[ObjectRef[Any]]]:
        """One result: its bytes (empty when stored), its store id and bytes there, and the refs inside it.

        A large result goes in the store when the caller has one on a node: told so by its
        type (arrays), or found so once pickled (a long list), as Ray stores any return value
        over 100 KiB.
        """
        if type(value) in _serialization.PLAIN_TYPES and not (caller.node_id and _serialization.is_large(value)):
            return _serialization.dumps_result(value, where), _INLINE, []
        with capturing_refs() as refs:
            if caller.node_id and _serialization.is_large(value):
                stored = self._host.store_result(value, caller.address, caller.node_id)
                if stored[0]:
                    return b"", stored, refs
            data = _serialization.dumps_result(value, where)
        if caller.node_id and len(data) >= _serialization.LARGE_ARGUMENT_BYTES:
            del refs[:]
            with capturing_refs() as refs:
                stored = self._host.store_result(value, caller.address, caller.node_id)
            if stored[0]:
                return b"", stored, refs
        return data, _INLINE, refs


def resolve_arguments(
    data: bytes, get_value: Callable[[ObjectRef[Any]], Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's (args, kwargs), with top-level refs replaced by their values.

    Refs nested in containers stay refs, as in Ray.
    """
    token = begin_unpickling_arguments()
    try:
        args, kwargs = _serialization.loads_args(data)
    finally:
        end_unpickling_arguments(token)
    if any(type(a) is ObjectRef for a in args):
        args = tuple(get_value(a) if type(a) is ObjectRef else a for a in args)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = {k: get_value(v) if type(v) is ObjectRef else v for k, v in kwargs.items()}
    return args, kwargs


def _ready() -> bool:
    return True


async def _awaited(value: Any) -> Any:
    if type(value) is ObjectRef:
        return await value
    return value


def _user_frames(e: BaseException) -> Any:
    # Drop our own frame so the remote traceback starts in user code.
    tb = e.__traceback__
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


class Mailbox(Protocol):
    """Where a stream's calls go: called on the server's loop, must never block it."""

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None: ...

    def finish(self, last: Callable[[], None], timeout: float) -> None:
        """Once the calls under way have ended (the actor is exiting: later ones never run), run
        `last` where the actor's calls run when it has a thread of its own. Returns when `last`
        has run, or after about `timeout`."""
        ...

    def interrupt(self, stream: ReplyStream, seqs: Sequence[int]) -> None:
        """These calls of `stream` were cancelled (and answered): a running coroutine is
        cancelled; a running thread is left to finish, as Ray leaves it (actor state)."""
        ...

    def close(self) -> None: ...


def _run_one(actor: ActorInstance, call: worker_pb2.Call, stream: ReplyStream) -> None:
    if actor.exit_reason:
        if actor.refusal is not None:
            stream.post(worker_pb2.Reply(seq=call.seq, error=actor.refusal))
        return  # the actor is ending: the call never runs, and its caller learns of the death
    if stream.answered(call.seq):
        stream.skip(call.seq)  # cancelled while queued: never runs
        return
    reply = worker_pb2.Reply()
    current_call.enter(stream, call)
    try:
        actor.execute(call, reply, stream.caller, stream.post_item)
    except BaseException as e:  # execute turns user errors into replies; this is our own bug
        log.exception("actor call %s failed outside the method", call.method)
        reply = worker_pb2.Reply(seq=call.seq, error=error_to_proto(e, tb=e.__traceback__))
    current_call.leave()
    stream.post(reply)


class ActorThread:
    """The thread an actor's constructor runs on and, for a serial actor, every call after it,
    one at a time in the order they arrived (as Ray runs a sync actor on its main thread).

    Its queue holds a stream's batches of calls as (calls, stream) pairs, and other work as
    plain callables.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Sequence[worker_pb2.Call], ReplyStream] | Callable[[], None] | None
        ] = queue.SimpleQueue()
        self.actor: ActorInstance | None = None
        self._thread = threading.Thread(target=self._serve, name="actorhub-actor", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run fn on this thread, after everything queued before it."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:  # handed to whoever waits for the result
                done.set_exception(e)

        self._queue.put(work)
        return done

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        self._queue.put((calls, stream))

    def _serve(self) -> None:
        release_current_thread()  # started from the loop's thread, whose one CPU it inherited
        get = self._queue.get
        while (item := get()) is not None:
            if type(item) is tuple:
                calls, stream = item
                actor = self.actor
                assert actor is not None  # calls are admitted only once the actor is built
                for call in calls:
                    _run_one(actor, call, stream)  # each reply leaves as its call ends
                del calls, stream
            else:
                item()  # type: ignore[operator]
            del item

    def close(self) -> None:
        self._queue.put(None)


class SerialMailbox:
    """One call at a time, on the actor's thread; a reply leaves as soon as its call ends.

    Calls from one caller keep their order: one stream carries them in order into one queue.
    """

    def __init__(self, actor: ActorInstance, thread: ActorThread) -> None:
        thread.actor = actor
        self._thread = thread

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        self._thread.submit(calls, stream)

    def finish(self, last: Callable[[], None], timeout: float) -> None:
        # On the actor's thread, as its calls ran: behind them in its queue.
        try:
            self._thread.run(last).result(timeout)
        except concurrent.futures.TimeoutError:
            log.warning("the actor's exit hooks did not end within %.0f s", timeout)

    def interrupt(self, stream: ReplyStream, seqs: Sequence[int]) -> None:
        pass  # a running call finishes (its result is dropped); queued ones are skipped

    def close(self) -> None:
        self._thread.close()


class ThreadedMailbox:
    """Up to `max_concurrency` calls at once on a thread pool; replies in finishing order."""

    def __init__(self, actor: ActorInstance, max_concurrency: int, name: str = "actorhub-actor") -> None:
        self._actor = actor
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=name,
                                        initializer=release_current_thread)

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        for call in calls:
            self._pool.submit(_run_one, self._actor, call, stream)

    def finish(self, last: Callable[[], None], timeout: float) -> None:
        # Queued calls are not cancelled: each returns at once (the actor is ending), answered
        # when a drain refuses them.
        waiter = threading.Thread(target=partial(self._pool.shutdown, wait=True), daemon=True)
        waiter.start()
        waiter.join(timeout)
        last()

    def interrupt(self, stream: ReplyStream, seqs: Sequence[int]) -> None:
        pass  # as SerialMailbox

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
