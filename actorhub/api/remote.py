"""The `@remote` decorator and `@method`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from actorhub.api.actor_class import CONCURRENCY_GROUP_ATTR, NUM_RETURNS_ATTR, ActorClass
from actorhub.api.options import ActorOptions, OptionsError, checked_concurrency_group

if TYPE_CHECKING:
    from actorhub.tasks.remote_function import RemoteFunction

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


# A class is also a callable; the class form must win, which mypy calls an overlap.
@overload
def remote(target: type[T]) -> ActorClass[T]: ...  # type: ignore[overload-overlap]
@overload
def remote(target: Callable[P, R]) -> RemoteFunction[P, R]: ...
@overload
def remote(target: None = None, **options: Any) -> Callable[[type[T]], ActorClass[T]]: ...
def remote(target: Any = None, **options: Any) -> Any:
    """`@remote` or `@remote(**options)`: a class becomes an actor class, a function a task."""
    if target is not None and options:
        raise TypeError("use @remote or @remote(**options), not both")
    if target is not None:
        return _make_remote(target, {})
    if not options:
        # As Ray: `@remote()` is refused, so a forgotten option is not silently the default.
        raise TypeError(
            "@remote must be used either bare, as `@remote`, or with options, as `@remote(num_cpus=2)`; "
            "not as `@remote()`"
        )

    def decorate(inner: Any) -> Any:
        return _make_remote(inner, options)

    return decorate


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, ActorOptions.parse(f"@remote on {target.__name__}", **options))
    if callable(target):
        if inspect.iscoroutinefunction(target):
            raise OptionsError(
                f"@remote on {getattr(target, '__qualname__', target)!r}: 'async def' should not be used for remote "
                "tasks; run the coroutine inside a plain function with asyncio.run(f()), or make it an async actor"
            )
        # Tasks live outside the kernel; the facade imports them only when a function is decorated.
        from actorhub.tasks.options import TaskOptions
        from actorhub.tasks.remote_function import RemoteFunction

        name = getattr(target, "__qualname__", repr(target))
        return RemoteFunction(target, TaskOptions.parse(f"@remote on {name}", **options))
    raise TypeError(f"@remote applies to a class, not {type(target).__name__}")


@overload
def method(target: F, /) -> F: ...
@overload
def method(*, num_returns: Any = 1, concurrency_group: str | None = None) -> Callable[[F], F]: ...
def method(target: Any = None, /, **options: Any) -> Any:
    """Declare options of an actor method: `@actorhub.method(num_returns=2)`,
    `@actorhub.method(concurrency_group="io")`, or bare `@actorhub.method` (no options)."""
    if target is not None:
        if options or not callable(target):
            raise TypeError("use @method or @method(**options) on an actor method")
        return target
    unknown = sorted(set(options) - {"num_returns", "concurrency_group"})
    if unknown:
        raise OptionsError(
            f"invalid options for @method: {', '.join(unknown)}: unknown option "
            "(num_returns and concurrency_group are)"
        )
    num_returns = options.get("num_returns", 1)
    if isinstance(num_returns, int) and not isinstance(num_returns, bool) and num_returns < 0:
        raise ValueError("num_returns must be >= 0")
    group = options.get("concurrency_group")
    if group is not None:
        try:
            checked_concurrency_group(group)
        except ValueError as e:
            raise OptionsError(f"invalid options for @method: concurrency_group={group!r}: {e}") from None

    def decorate(func: F) -> F:
        if "num_returns" in options:
            setattr(func, NUM_RETURNS_ATTR, num_returns)
        if group is not None:
            setattr(func, CONCURRENCY_GROUP_ATTR, group)
        return func

    return decorate
