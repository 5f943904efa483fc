"""Generators: num_returns="streaming" / "dynamic", ObjectRefGenerator, for tasks and actors."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import actorhub
from actorhub._proto.v1 import worker_pb2
from actorhub.exceptions import ActorDiedError, OptionsError, TaskCancelledError
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_table import ObjectTable
from actorhub.runtime.runtime import current
from actorhub.wire.call_state import CallState, PendingCall

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote
class Source:
    def count(self, n: int, delay: float = 0.0) -> Any:
        for i in range(n):
            if delay and i:
                time.sleep(delay)
            yield i

    def fail_after(self, n: int) -> Any:
        yield from range(n)
        raise ValueError(f"no more than {n}")

    def arrays(self, n: int) -> Any:
        for i in range(n):
            yield np.full(1 << 20, i, dtype=np.uint8)  # 1 MiB each

    def pid_then_slowly(self) -> Any:
        yield os.getpid()
        for i in range(1, 100):
            time.sleep(0.2)
            yield i

    def not_a_generator(self) -> int:
        return 3

    def exits_after(self, n: int) -> Any:
        yield from range(n)
        actorhub.actor.exit_actor()

    @actorhub.method(num_returns="dynamic")
    def chunks(self, n: int) -> Any:
        yield from range(n)


@actorhub.remote
class AsyncSource:
    async def count(self, n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0.001)
            yield i

    async def relay(self, source: Any, n: int) -> list[int]:
        # Consumes another actor's generator without blocking this actor's loop.
        return [await ref async for ref in source.count.remote(n)]


@actorhub.remote(max_concurrency=4)
class ThreadedSource:
    def count(self, n: int, delay: float) -> Any:
        for i in range(n):
            time.sleep(delay)
            yield i


@actorhub.remote
def count_task(n: int) -> Any:
    for i in range(n):
        yield i * 2


@actorhub.remote
def total(*values: int) -> int:
    return sum(values)


def test_the_call_state_hands_each_item_to_its_stream_once() -> None:
    """Without processes: items of a streaming call (sent again after a restart) go to its
    stream once per index, and only the last reply completes the call."""
    table = ObjectTable()
    stream = ItemStream(table, "me")
    state = CallState("a1", "Source", max_task_retries=1, max_pending_calls=-1)
    state.submitted(PendingCall(7, "count", b"", 1, ["me.7"], 1, stream=stream))
    batch = worker_pb2.CallBatch()
    state.send_into(batch)
    assert batch.calls[0].streaming

    def item(index: int) -> worker_pb2.Reply:
        return worker_pb2.Reply(seq=7, values=[b"v"], stream_item=True, stream_index=index)

    items: list[tuple[PendingCall, worker_pb2.Reply]] = []
    replies = worker_pb2.ReplyBatch(replies=[item(0), item(1), item(0), item(1), item(2)])
    completions, _ = state.replies_received(replies, items)
    assert completions == [] and [reply.stream_index for _, reply in items] == [0, 1, 2]
    assert 7 in state.inflight  # items end no call
    items.clear()
    end = worker_pb2.ReplyBatch(replies=[worker_pb2.Reply(seq=7, values=[b"e"])])
    completions, _ = state.replies_received(end, items)
    assert completions == [("me.7", b"e", None)] and not items and not state.inflight


def test_actor_generator_streams_every_item_in_order() -> None:
    source = Source.remote()
    gen = source.count.remote(5)
    assert isinstance(gen, actorhub.ObjectRefGenerator)
    assert [actorhub.get(ref) for ref in gen] == [0, 1, 2, 3, 4]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(gen)
    assert gen.is_finished() and not gen.next_ready()
    assert actorhub.get(gen.completed()) is None


def test_each_item_arrives_as_it_is_yielded() -> None:
    source = Source.remote()
    actorhub.get(source.count.remote(1).completed())  # the actor is up
    start = time.monotonic()
    gen = source.count.remote(3, 2.0)  # 2 s between items
    first = next(gen)
    assert time.monotonic() - start < 1.0
    assert actorhub.get(first) == 0
    ready, _ = actorhub.wait([gen.completed()], timeout=0)
    assert not ready  # the generator runs on
    assert actorhub.get(next(gen)) == 1
    assert time.monotonic() - start > 1.5


def test_wait_takes_generators() -> None:
    source = Source.remote()
    slow = source.count.remote(3, 1.0)
    next(slow)  # the next item is a second away
    other = Source.remote()
    done = other.count.remote(1)  # another actor: this one is busy with `slow`
    actorhub.get(done.completed())
    plain = actorhub.put(1)
    ready, not_ready = actorhub.wait([slow, done, plain], num_returns=2, timeout=10)
    assert ready == [done, plain] and not_ready == [slow]
    ready, not_ready = actorhub.wait([slow], timeout=0)
    assert ready == [] and not_ready == [slow]
    ready, _ = actorhub.wait([slow], timeout=10)
    assert ready == [slow] and slow.next_ready()


def test_exception_ends_the_stream_where_it_happened() -> None:
    actor = Source.remote()
    gen = actor.fail_after.remote(2)
    assert actorhub.get(next(gen)) == 0
    assert actorhub.get(next(gen)) == 1
    with pytest.raises(ValueError, match="no more than 2"):
        actorhub.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)
    # The generator raised: that is its last item, not a failure of the call.
    assert actorhub.get(gen.completed()) is None


def test_large_items_go_through_the_store() -> None:
    actor = Source.remote()
    refs = list(actor.arrays.remote(3))
    objects = current().objects
    assert len(refs) == 3
    assert all(objects.is_stored(ref.hex()) for ref in refs)
    for i, ref in enumerate(refs):
        value = actorhub.get(ref)
        assert value.shape == (1 << 20,) and value[0] == i and value[-1] == i


def test_async_and_threaded_actors_stream() -> None:
    actor = AsyncSource.remote()
    assert [actorhub.get(ref) for ref in actor.count.remote(5)] == [0, 1, 2, 3, 4]
    threaded = ThreadedSource.remote()
    start = time.monotonic()
    gens = [threaded.count.remote(4, 0.25) for _ in range(3)]  # 1 s each, at once on its threads
    assert [[actorhub.get(ref) for ref in gen] for gen in gens] == [[0, 1, 2, 3]] * 3
    assert time.monotonic() - start < 2.5  # one after the other would take 3 s


def test_async_iteration_in_an_async_actor_and_the_driver() -> None:
    source = Source.remote()
    relay = AsyncSource.remote()
    assert actorhub.get(relay.relay.remote(source, 20)) == list(range(20))

    async def consume() -> list[int]:
        gen = source.count.remote(4)
        first = await gen.__anext__()
        rest = [await ref async for ref in gen]
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return [await first, *rest]

    assert asyncio.run(consume()) == [0, 1, 2, 3]


def test_items_pass_to_other_tasks() -> None:
    actor = Source.remote()
    refs = list(actor.count.remote(5))
    assert actorhub.get(total.remote(*refs)) == 10
    assert actorhub.get(total.remote(*[actorhub.get(r) for r in refs])) == 10


def test_a_thousand_small_items_all_arrive_in_order() -> None:
    actor = Source.remote()
    gen = actor.count.remote(1000)
    assert actorhub.get(list(gen)) == list(range(1000))


def test_killed_worker_mid_stream() -> None:
    source = Source.remote()
    gen = source.pid_then_slowly.remote()
    first = next(gen)
    pid = actorhub.get(first)
    second = next(gen)
    assert actorhub.get(second) == 1
    os.kill(pid, signal.SIGKILL)
    died = False
    for ref in gen:  # items sent before the death may still come first
        try:
            actorhub.get(ref, timeout=30)
        except ActorDiedError:
            died = True
    assert died
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(ActorDiedError):
        actorhub.get(gen.completed())
    # What it yielded before it died is still here.
    assert actorhub.get([first, second]) == [pid, 1]


def test_handles_from_elsewhere_know_generator_methods() -> None:
    source = Source.options(name="generator-source").remote()
    found = actorhub.get_actor("generator-source")
    assert [actorhub.get(ref) for ref in found.count.remote(3)] == [0, 1, 2]
    assert [actorhub.get(ref) for ref in actorhub.get(found.chunks.remote(2))] == [0, 1]
    actorhub.kill(source)


def test_exit_actor_inside_a_generator_ends_the_actor() -> None:
    source = Source.remote()
    gen = source.exits_after.remote(2)
    assert actorhub.get(next(gen)) == 0
    assert actorhub.get(next(gen)) == 1
    with pytest.raises(ActorDiedError, match="exit_actor"):
        actorhub.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(ActorDiedError):
        actorhub.get(source.count.remote(1).completed(), timeout=30)


def test_a_restarted_actor_streams_the_rest_of_a_retried_call(tmp_path: Path) -> None:
    @actorhub.remote(max_restarts=1, max_task_retries=1)
    class CrashesOnce:
        def count(self, path: str) -> Any:
            for i in range(5):
                if i == 3 and not os.path.exists(path):
                    open(path, "w").close()
                    os._exit(1)
                yield i

    marker = tmp_path / "crashed"
    actor = CrashesOnce.remote()
    gen = actor.count.remote(str(marker))
    assert [actorhub.get(ref, timeout=60) for ref in gen] == [0, 1, 2, 3, 4]
    assert marker.exists()


def test_a_method_that_is_not_a_generator_fails_the_call() -> None:
    actor = Source.remote()
    gen = actor.not_a_generator.options(num_returns="streaming").remote()
    with pytest.raises(TypeError, match="not a generator"):
        actorhub.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_dynamic_returns_one_ref_to_the_items() -> None:
    source = Source.remote()
    ref = source.chunks.remote(4)
    assert isinstance(ref, actorhub.ObjectRef)
    refs = actorhub.get(ref)
    assert isinstance(refs, actorhub.DynamicObjectRefGenerator) and len(refs) == 4
    assert [actorhub.get(r) for r in refs] == [0, 1, 2, 3]
    # Passed on, the value carries its refs.
    assert actorhub.get(total.remote(*actorhub.get(ref))) == 6
    dynamic = source.fail_after.options(num_returns="dynamic").remote(1)
    items = list(actorhub.get(dynamic))
    assert actorhub.get(items[0]) == 0
    with pytest.raises(ValueError):
        actorhub.get(items[1])


def test_generator_tasks() -> None:
    gen = count_task.remote(4)  # a generator function streams by default, as in Ray
    assert isinstance(gen, actorhub.ObjectRefGenerator)
    assert [actorhub.get(r) for r in gen] == [0, 2, 4, 6]
    dynamic = count_task.options(num_returns="dynamic").remote(3)
    assert [actorhub.get(r) for r in actorhub.get(dynamic)] == [0, 2, 4]
    # A count still works: the generator yields that many values.
    a, b = count_task.options(num_returns=2).remote(2)
    assert actorhub.get([a, b]) == [0, 2]


def test_generator_task_error_and_retry_after_a_crash(tmp_path: Path) -> None:
    @actorhub.remote
    def failing() -> Any:
        yield 1
        raise KeyError("gone")

    gen = failing.remote()
    assert actorhub.get(next(gen)) == 1
    with pytest.raises(KeyError):
        actorhub.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)

    marker = tmp_path / "crashed"

    @actorhub.remote(max_retries=1)
    def crashes_once(path: str) -> Any:
        for i in range(5):
            if i == 3 and not os.path.exists(path):
                open(path, "w").close()
                os._exit(1)
            yield i

    # The retry yields 0..2 again: each item reaches the caller once.
    assert [actorhub.get(r) for r in crashes_once.remote(str(marker))] == [0, 1, 2, 3, 4]
    assert marker.exists()


def test_cancel_a_generator_task() -> None:
    @actorhub.remote
    def slow() -> Any:
        for i in range(50):
            yield i
            time.sleep(0.1)

    gen = slow.remote()
    assert actorhub.get(next(gen)) == 0
    actorhub.cancel(gen)
    with pytest.raises(TaskCancelledError):
        for ref in gen:
            actorhub.get(ref, timeout=30)
    with pytest.raises(StopIteration):
        next(gen)


def test_bad_uses() -> None:
    actor = Source.remote()
    gen = actor.count.remote(2)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(gen)
    with pytest.raises(TypeError):
        total.remote(gen)
    with pytest.raises(NotImplementedError):
        gen.send(1)
    with pytest.raises(OptionsError, match="num_returns"):
        count_task.options(num_returns="lots")
    with pytest.raises(OptionsError, match="generator"):

        @actorhub.remote(num_returns="streaming")
        def plain() -> int:
            return 1

    with pytest.raises(OptionsError, match="generator"):

        @actorhub.remote
        class Plain:
            @actorhub.method(num_returns="streaming")
            def value(self) -> int:
                return 1
