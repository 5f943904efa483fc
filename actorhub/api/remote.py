"""The `@remote` decorator and `@method`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from actorhub.api.actor_class import NUM_RETURNS_ATTR, ActorClass
from actorhub.api.options import ActorOptions

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

    def decorate(inner: Any) -> Any:
        return _make_remote(inner, options)

    return decorate


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, ActorOptions.parse(f"@remote on {target.__name__}", **options))
    if callable(target):
        # Tasks live outside the kernel; the facade imports them only when a function is decorated.
        from actorhub.tasks.options import TaskOptions
        from actorhub.tasks.remote_function import RemoteFunction

        name = getattr(target, "__qualname__", repr(target))
        return RemoteFunction(target, TaskOptions.parse(f"@remote on {name}", **options))
    raise TypeError(f"@remote applies to a class, not {type(target).__name__}")


def method(*, num_returns: int = 1) -> Callable[[F], F]:
    """Declare options of an actor method, e.g. `@actorhub.method(num_returns=2)`."""
    if num_returns < 0:
        raise ValueError("num_returns must be >= 0")

    def decorate(func: F) -> F:
        setattr(func, NUM_RETURNS_ATTR, num_returns)
        return func

    return decorate
