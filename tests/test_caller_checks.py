"""Checks at the caller, as Ray: arguments bind to the signature at .remote(), bad decorators are refused."""

from __future__ import annotations

import functools
from typing import Any

import pytest

import actorhub
from actorhub.api import arg_checks
from actorhub.exceptions import OptionsError


@actorhub.remote
def two(a: int, b: int = 0) -> int:
    return a + b


@actorhub.remote
def keyword_only(a: int, *, scale: int) -> int:
    return a * scale


@actorhub.remote
def anything(*args: Any, **kwargs: Any) -> int:
    return len(args) + len(kwargs)


def _logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@actorhub.remote
class Box:
    def __init__(self, size: int) -> None:
        self.size = size

    def put(self, item: str, count: int = 1) -> int:
        return self.size + count

    @_logged
    def wrapped(self, x: int) -> int:
        return x

    @staticmethod
    def static(x: int) -> int:
        return x

    def loose(self, *args: Any, **kwargs: Any) -> int:
        return len(args)


def test_checks_are_computed_once_and_skip_open_signatures() -> None:
    assert arg_checks.for_function(anything._function, "anything") is None
    assert arg_checks.for_function(two._function, "two") is arg_checks.for_function(two._function, "two")
    checks = arg_checks.for_class(Box._cls)
    assert set(checks) == {"__init__", "put", "wrapped", "static"}  # `loose` takes anything
    assert arg_checks.for_class(Box._cls) is checks


def test_task_arguments_are_checked_before_anything_is_sent() -> None:
    # No cluster is needed to refuse them: nothing starts.
    with pytest.raises(TypeError, match=r"two.remote\(\): too many positional arguments"):
        two.remote(1, 2, 3)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        two.remote()
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        two.remote(1, c=2)
    with pytest.raises(TypeError, match="scale"):
        keyword_only.remote(1)
    with pytest.raises(TypeError):
        two.options(name="renamed").remote(1, 2, 3)
    with pytest.raises(TypeError, match=r"Box.remote\(\)"):
        Box.remote()
    assert not actorhub.is_initialized()


def test_good_calls_run_and_bad_method_calls_fail_at_the_caller(shared_cluster: actorhub.ClusterContext) -> None:
    assert actorhub.get([two.remote(1), two.remote(1, 2), two.remote(a=1, b=2), keyword_only.remote(2, scale=3),
                         anything.remote(1, 2, x=3)]) == [1, 3, 3, 6, 3]
    box = Box.remote(10)
    calls = [box.put.remote("x"), box.put.remote("x", 5), box.put.remote(item="x", count=2),
             box.wrapped.remote(7), box.static.remote(8), box.loose.remote(1, 2, 3)]
    assert actorhub.get(calls) == [11, 15, 12, 7, 8, 3]
    with pytest.raises(TypeError, match=r"Box.put.remote\(\): missing a required argument: 'item'"):
        box.put.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        box.put.remote("x", 1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        box.wrapped.remote(x=1, y=2)
    with pytest.raises(TypeError):
        box.static.remote()
    # A handle found by name has no class at hand: the actor refuses the call instead.
    named = Box.options(name="checked-box").remote(1)
    found = actorhub.get_actor("checked-box")
    with pytest.raises(TypeError):
        actorhub.get(found.put.remote())
    assert actorhub.get(named.put.remote("ok")) == 2


def test_remote_with_empty_parentheses_is_refused() -> None:
    with pytest.raises(TypeError, match=r"not as `@remote\(\)`"):
        @actorhub.remote()
        def f() -> None:
            pass


def test_async_def_remote_function_is_refused() -> None:
    async def coro() -> int:
        return 1

    with pytest.raises(OptionsError, match="'async def' should not be used for remote tasks"):
        actorhub.remote(coro)
    with pytest.raises(ValueError):  # Ray raises ValueError: OptionsError is one
        actorhub.remote(num_cpus=1)(coro)

    @actorhub.remote
    class AsyncActor:  # async methods of actors are fine
        async def ping(self) -> int:
            return 1

    assert AsyncActor is not None


def test_empty_namespace_is_refused_at_init() -> None:
    with pytest.raises(OptionsError, match="namespace"):
        actorhub.init(namespace="")
