"""ActorClass: what `@actorhub.remote` makes of a class; `.remote(...)` creates an actor."""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

from actorhub.api.actor_handle import ActorHandle, HandleState, MethodInfo
from actorhub.api.cluster import connected_runtime
from actorhub.api.options import UINT32_MAX, ActorOptions, OptionsError
from actorhub.runtime import serialization as _serialization
from actorhub.runtime.ids import new_id
from actorhub.runtime.runtime import Runtime
from actorhub.wire.records import ActorSpec
from actorhub.wire.rpc import check_message_size

T = TypeVar("T")
NUM_RETURNS_ATTR = "__actorhub_num_returns__"


def method_infos(cls: type) -> dict[str, MethodInfo]:
    infos: dict[str, MethodInfo] = {}
    for name in dir(cls):
        if name.startswith("__"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        func = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
        if not callable(func):
            continue
        is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        infos[name] = MethodInfo(name, _num_returns(cls, name, getattr(func, NUM_RETURNS_ATTR, 1)), is_async)
    return infos


def _num_returns(cls: type, name: str, value: object) -> int:
    """`@method(num_returns=...)` of `cls.name`, checked when the class is made remote: it
    travels as MethodMeta.num_returns (uint32), where a bad value would fail at creation."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT32_MAX:
        raise OptionsError(
            f"invalid options for {cls.__name__}.{name}: num_returns={value!r}: "
            f"must be an int from 0 to {UINT32_MAX}"
        )
    return value


class ActorClass(Generic[T]):
    """A remote class. `Cls.remote(*args)` creates an actor; `Cls.options(...)` sets options."""

    def __init__(self, cls: type[T], options: ActorOptions, _pickled: list[bytes] | None = None) -> None:
        self._cls = cls
        self._options = options
        _serialization.ship_module_of(cls)
        self._methods = method_infos(cls)
        self._is_async = any(m.is_async for m in self._methods.values())
        # Shared with the copies .options() makes: the class is pickled once.
        self._pickled: list[bytes] = _pickled if _pickled is not None else []
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def options(self, **options: Any) -> ActorClass[T]:
        return ActorClass(self._cls, self._options.merged(f"{self._cls.__name__}.options()", **options), self._pickled)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor classes cannot be instantiated directly; use {self._cls.__name__}.remote(...)"
        )

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        return self._create(connected_runtime(), args, kwargs)

    def _create(self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActorHandle[T]:
        """Create the actor through `runtime`: see create_actor, the way in for everything but `remote`."""
        options = self._options
        name = self._cls.__name__
        if options.get_if_exists and not options.name:
            raise OptionsError(f"invalid options for {name}: get_if_exists=True needs a name")
        if not self._pickled:
            self._pickled.append(_serialization.dumps(self._cls))
        max_concurrency = options.max_concurrency or (0 if self._is_async else 1)
        init_args = _serialization.dumps_args(args, kwargs, f"{name}.__init__")
        check_message_size(
            f"the class and constructor arguments of {name}", len(init_args) + len(self._pickled[0]),
            runtime.max_message_bytes,
        )
        spec = ActorSpec(
            actor_id=new_id(12),
            class_name=name,
            pickled_class=self._pickled[0],
            init_args=init_args,
            name=options.name or "",
            namespace=options.namespace if options.namespace is not None else runtime.namespace,
            detached=options.detached,
            max_restarts=options.max_restarts,
            max_task_retries=options.max_task_retries,
            max_concurrency=max_concurrency,
            max_pending_calls=options.max_pending_calls,
            num_cpus=options.num_cpus,
            owner_job_id=runtime.job_id,
            owner_actor_id=runtime.actor_id,
            job_namespace=runtime.namespace,
            methods=tuple(self._methods.values()),
            is_async=self._is_async,
            hub_address=runtime.hub_address,
            node_id=options.node_id,
        )
        # A taken name raises ValueError; a hub that is away (down, or restarting) is waited for
        # within the create_actor deadline, then raises ControlPlaneUnavailableError. Repeating
        # the call is safe: the hub knows the actor by its id.
        info = runtime.hub.create_actor(spec, options.get_if_exists)
        return ActorHandle(HandleState.from_info(info), runtime)

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__qualname__})"


def create_actor(runtime: Runtime, actor_class: ActorClass[T], /, *args: Any, **kwargs: Any) -> ActorHandle[T]:
    """Create an actor of `actor_class` through `runtime`; the handle keeps that runtime.

    actorhub's own machinery (lease desks, task executors) creates its actors with this, with
    the runtime it was given, so it can never start a cluster by accident as the public
    `ActorClass.remote` may. A module function, not a method: the public class keeps one way in.
    """
    return actor_class._create(runtime, args, kwargs)
