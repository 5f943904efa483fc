"""Running a streaming call: a generator method whose items go back one by one as yielded.

A call sent with `Call.streaming` (`num_returns="streaming"` or `"dynamic"` at the caller) runs
its method as usual; the generator it returns (sync, or async in an async actor) is then run
to its end here, on the thread or loop that ran the method. Each item is filled like a
call's result (large values go in the store for the caller, refs inside are lent) into a
Reply of its own, `stream_item` with its index, and posted at once: the caller has it while
the generator runs on. An exception, from the generator or from storing an item, is the
last item (its error), and ends the stream there. Then `reply`, the call's own, says the call
ended. A method that returns something else than a generator fails the call, and an actor
exit in the generator (`exit_actor()`, `sys.exit()`) ends it as it would end a method.

Calls the method made without waiting reach their actors before each item does, as before
any reply (ARCHITECTURE.md, "Delivery before reply"). A caller that went away stops the
generator at its next item.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from actorhub._proto.v1 import worker_pb2
from actorhub.exceptions import AsyncioActorExit
from actorhub.wire.errors import error_to_proto
from actorhub.worker.reply_stream import Caller

if TYPE_CHECKING:
    from actorhub.worker.mailbox import ActorInstance, CallHost

# Posts one item; False when nobody takes more (ReplyStream.post_item).
PostItem = Callable[[worker_pb2.Reply], bool]


def run_stream(
    actor: ActorInstance, host: CallHost, call: worker_pb2.Call, result: Any, reply: worker_pb2.Reply,
    caller: Caller, post_item: PostItem,
) -> None:
    """Run the generator `result` of `call`, posting its items; then fill `reply`, its end."""
    if not inspect.isgenerator(result):
        _not_a_generator(actor, call, result, reply)
        return
    _drain(actor, host, call, result, caller, post_item)
    actor.fill(call, None, reply, caller)


async def run_stream_async(
    actor: ActorInstance, host: CallHost, call: worker_pb2.Call, result: Any, reply: worker_pb2.Reply,
    caller: Caller, post_item: PostItem,
) -> None:
    """As run_stream, on the actor's event loop: an async generator runs there between awaits."""
    if inspect.isgenerator(result):
        _drain(actor, host, call, result, caller, post_item)  # a sync method of an async actor: on the loop
    elif inspect.isasyncgen(result):
        await _drain_async(actor, host, call, result, caller, post_item)
    else:
        _not_a_generator(actor, call, result, reply)
        return
    actor.fill(call, None, reply, caller)


def _drain(
    actor: ActorInstance, host: CallHost, call: worker_pb2.Call, items: Iterator[Any], caller: Caller,
    post_item: PostItem,
) -> None:
    index = 0
    try:
        for value in items:
            if host.has_unsent_calls():
                host.send_submitted_calls()
            if not _post(actor, call, value, index, caller, post_item):
                break
            index += 1
    except SystemExit:
        raise  # exit_actor() or sys.exit() in the generator: the actor ends, as from a method
    except BaseException as e:  # user code may raise anything: it is the stream's last item
        post_item(_error_item(call, index, e))
    finally:
        if inspect.isgenerator(items):
            items.close()  # a stream stopped early runs the generator's finally blocks now


async def _drain_async(
    actor: ActorInstance, host: CallHost, call: worker_pb2.Call, items: AsyncIterator[Any], caller: Caller,
    post_item: PostItem,
) -> None:
    index = 0
    try:
        async for value in items:
            if host.has_unsent_calls():
                await asyncio.get_running_loop().run_in_executor(None, host.send_submitted_calls)
            if not _post(actor, call, value, index, caller, post_item):
                break
            index += 1
    except (asyncio.CancelledError, SystemExit, AsyncioActorExit):
        raise  # cancel(), or the actor ends: the call's own reply says so, not an item
    except BaseException as e:  # as in _drain
        post_item(_error_item(call, index, e))
    finally:
        if inspect.isasyncgen(items):
            await items.aclose()


def _post(
    actor: ActorInstance, call: worker_pb2.Call, value: Any, index: int, caller: Caller, post_item: PostItem
) -> bool:
    """Post item `index`; False when the stream ends here (it could not be stored or sent, or
    nobody takes it)."""
    item = worker_pb2.Reply(seq=call.seq, stream_item=True, stream_index=index)
    actor.fill(call, value, item, caller)
    return post_item(item) and not item.HasField("error")


def _error_item(call: worker_pb2.Call, index: int, e: BaseException) -> worker_pb2.Reply:
    item = worker_pb2.Reply(seq=call.seq, stream_item=True, stream_index=index)
    item.error.CopyFrom(error_to_proto(e, tb=_in_generator(e.__traceback__)))
    return item


def _in_generator(tb: TracebackType | None) -> TracebackType | None:
    # Our own loop's frame first: the remote traceback starts in the user's generator.
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


def _not_a_generator(actor: ActorInstance, call: worker_pb2.Call, result: Any, reply: worker_pb2.Reply) -> None:
    error = TypeError(
        f"{actor.class_name}.{call.method} was called with num_returns='streaming' but returned "
        f"{type(result).__name__}, not a generator: define it with yield"
    )
    reply.error.CopyFrom(error_to_proto(error, tb=None))
