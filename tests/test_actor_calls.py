"""Actor calls on a real local cluster: results, order, errors, options, refs."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import actorhub
from actorhub.exceptions import (
    ActorDiedError,
    ActorHubError,
    GetTimeoutError,
    PendingCallsLimitExceededError,
    RayTaskError,
    SerializationError,
    TaskError,
)

pytestmark = pytest.mark.usefixtures("shared_cluster")


@actorhub.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.log: list[Any] = []

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def record(self, item: Any) -> None:
        self.log.append(item)

    def history(self) -> list[Any]:
        return self.log

    def fail(self, key: str) -> None:
        raise KeyError(key)

    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @actorhub.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.value, -self.value

    def echo(self, value: Any) -> Any:
        return value


def test_calls_return_values_in_order() -> None:
    c = Counter.remote(10)
    assert actorhub.get(c.incr.remote()) == 11
    refs = [c.incr.remote(2) for _ in range(100)]
    assert actorhub.get(refs) == list(range(13, 213, 2))


def test_per_caller_order_with_several_callers() -> None:
    sink = Counter.remote()
    n_threads, per_thread = 4, 200

    def caller(t: int) -> None:
        for i in range(per_thread):
            sink.record.remote((t, i))

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    @actorhub.remote
    class Caller:
        def run(self, target: Any, tag: str, n: int) -> None:
            for i in range(n):
                target.record.remote((tag, i))
            actorhub.get(target.history.remote())

    callers = [Caller.remote() for _ in range(3)]
    actorhub.get([c.run.remote(sink, f"actor{k}", 100) for k, c in enumerate(callers)])
    log = actorhub.get(sink.history.remote())
    assert len(log) == n_threads * per_thread + 300
    by_caller: dict[Any, list[int]] = {}
    for tag, i in log:
        by_caller.setdefault(tag, []).append(i)
    for tag, seq in by_caller.items():
        assert seq == sorted(seq), f"calls from {tag} ran out of order"


@actorhub.remote
def _tell(tally: Any) -> None:
    tally.incr.remote()  # not waited for: the task's last act


@actorhub.remote
class _Teller:
    def tell(self, tally: Any) -> None:
        tally.incr.remote()


@actorhub.remote
class _AsyncTeller:
    async def tell(self, tally: Any) -> None:
        tally.incr.remote()


def test_calls_made_without_waiting_reach_their_actor_before_the_result_does() -> None:
    # The seeds' tracker pattern: tasks call an actor without waiting, return, and the driver
    # then asks the actor for its counts. Each round uses a new actor, so every teller opens a
    # new connection to it: the slow case, where the result used to overtake the call.
    tellers = [_tell, _Teller.remote().tell, _AsyncTeller.remote().tell]
    for _ in range(5):
        tally = Counter.remote()
        assert actorhub.get(tally.incr.remote(0)) == 0
        for expected, teller in enumerate(tellers, start=1):
            actorhub.get(teller.remote(tally))
            assert actorhub.get(tally.incr.remote(0)) == expected, teller


def test_method_exception_is_instance_of_original_and_actor_survives() -> None:
    c = Counter.remote()
    with pytest.raises(KeyError) as info:
        actorhub.get(c.fail.remote("missing"))
    err = info.value
    assert isinstance(err, TaskError) and isinstance(err, RayTaskError) and isinstance(err, ActorHubError)
    assert "missing" in str(err)
    assert "in fail" in err.remote_traceback and "raise KeyError" in err.remote_traceback
    assert actorhub.get(c.incr.remote()) == 1


def test_exception_that_does_not_pickle_arrives_readable() -> None:
    @actorhub.remote
    class Bad:
        def boom(self) -> None:
            class Local(Exception):
                def __init__(self, a: int, b: int) -> None:  # pickling this fails on re-init
                    super().__init__(f"bad {a}")
                    self.lock = threading.Lock()

            raise Local(1, 2)

    b = Bad.remote()
    with pytest.raises(TaskError) as info:
        actorhub.get(b.boom.remote())
    assert "bad 1" in str(info.value)
    assert "Local" in info.value.cause_type_name


def test_constructor_exception_makes_actor_dead() -> None:
    @actorhub.remote
    class Broken:
        def __init__(self) -> None:
            raise ValueError("no config")

        def ping(self) -> int:
            return 1

    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(ActorDiedError) as info:
            actorhub.get(b.ping.remote(), timeout=30)
        assert "ValueError" in str(info.value) and "no config" in str(info.value)


def test_unserializable_argument_names_it() -> None:
    c = Counter.remote()
    with pytest.raises(SerializationError) as info:
        c.echo.remote(threading.Lock())
    assert "argument 0" in str(info.value) and "Counter.echo" in str(info.value)
    assert isinstance(info.value, TypeError)
    assert actorhub.get(c.echo.remote(5)) == 5  # nothing was lost


def test_num_returns_and_options() -> None:
    c = Counter.remote(3)
    a, b = c.pair.remote()
    assert actorhub.get([a, b]) == [3, -3]
    x, y, z = c.echo.options(num_returns=3).remote([1, 2, 3])
    assert actorhub.get([x, y, z]) == [1, 2, 3]


def test_get_timeout_and_wait() -> None:
    c = Counter.remote()
    slow = c.slow.remote(1.0)
    with pytest.raises(GetTimeoutError) as info:
        actorhub.get(slow, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    ready, not_ready = actorhub.wait([slow], timeout=0.01)
    assert ready == [] and not_ready == [slow]
    fast = c.incr.remote()
    ready, not_ready = actorhub.wait([slow, fast], num_returns=2, timeout=10)
    assert set(ready) == {slow, fast} and not_ready == []


def test_put_and_ref_arguments() -> None:
    c = Counter.remote()
    ref = actorhub.put({"x": 41})
    assert actorhub.get(ref) == {"x": 41}
    # a top-level ref is resolved before the call runs; a nested one stays a ref
    assert actorhub.get(c.echo.remote(ref)) == {"x": 41}
    nested = actorhub.get(c.echo.remote([ref]))
    assert isinstance(nested[0], actorhub.ObjectRef)
    assert actorhub.get(nested[0]) == {"x": 41}
    # a ref to a pending result, passed on before it is ready
    slow = c.slow.remote(0.2)
    d = Counter.remote()
    assert actorhub.get(d.echo.remote(slow)) == 0.2


def test_max_pending_calls_raises_at_caller() -> None:
    c = Counter.options(max_pending_calls=2).remote()
    first = c.slow.remote(0.5)
    c.slow.remote(0.01)
    with pytest.raises(PendingCallsLimitExceededError):
        c.slow.remote(0.01)
    actorhub.get(first)


def test_max_concurrency_runs_calls_in_parallel() -> None:
    c = Counter.options(max_concurrency=4).remote()
    start = time.monotonic()
    actorhub.get([c.slow.remote(0.5) for _ in range(4)])
    assert time.monotonic() - start < 1.5


def test_async_actor_interleaves_calls() -> None:
    @actorhub.remote
    class AsyncActor:
        def __init__(self) -> None:
            self.n = 0

        async def sleep(self, s: float) -> float:
            await asyncio.sleep(s)
            self.n += 1
            return s

        async def count(self) -> int:
            return self.n

    a = AsyncActor.remote()
    start = time.monotonic()
    assert actorhub.get([a.sleep.remote(0.5) for _ in range(10)]) == [0.5] * 10
    assert time.monotonic() - start < 2.0
    assert actorhub.get(a.count.remote()) == 10


def test_handles_pass_between_actors_and_return_from_methods() -> None:
    target = Counter.remote()

    @actorhub.remote
    class Holder:
        def __init__(self, h: Any) -> None:
            self.h = h

        def bump(self) -> int:
            return actorhub.get(self.h.incr.remote())

        def handle(self) -> Any:
            return self.h

    holder = Holder.remote(target)
    assert actorhub.get(holder.bump.remote()) == 1
    again = actorhub.get(holder.handle.remote())
    assert actorhub.get(again.incr.remote()) == 2


def test_bad_options_and_direct_calls_raise_typed_errors() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        Counter.options(max_restarts=-5)
    with pytest.raises(ValueError, match="bogus"):
        Counter.options(bogus=1)
    with pytest.raises(TypeError):
        Counter()
    c = Counter.remote()
    with pytest.raises(AttributeError, match="nope"):
        c.nope.remote()
    with pytest.raises(TypeError):
        c.incr()


def test_runtime_context() -> None:
    @actorhub.remote
    class Where:
        def ctx(self) -> dict[str, Any]:
            rc = actorhub.get_runtime_context()
            return {**rc.get(), "reconstructed": rc.was_current_actor_reconstructed}

    w = Where.remote()
    ctx = actorhub.get(w.ctx.remote())
    rc = actorhub.get_runtime_context()
    assert ctx["actor_id"] == w.actor_id
    assert ctx["job_id"] == rc.get_job_id()
    assert ctx["namespace"] == rc.namespace
    assert ctx["node_id"] == rc.get_node_id() != ""
    assert ctx["reconstructed"] is False
    assert rc.get_actor_id() is None
