"""ActorHandle: a reference to a running actor, passable to any task, actor or application.

A handle pickles to the actor's id and what a caller needs to know about its methods; the
receiving process finds the actor's address through its own hub connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from actorhub._proto.v1 import common_pb2
from actorhub.api.options import CallOptions
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.object_ref import ObjectRef

T = TypeVar("T")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    num_returns: int = 1
    is_async: bool = False


@dataclass(frozen=True)
class HandleState:
    """Everything a handle carries; identical in every process that holds the handle."""

    actor_id: str
    class_name: str
    methods: dict[str, MethodInfo] = field(hash=False)
    max_task_retries: int = 0
    max_pending_calls: int = -1
    is_async: bool = False

    @classmethod
    def from_info(cls, info: common_pb2.ActorInfo) -> HandleState:
        return cls(
            actor_id=info.actor_id,
            class_name=info.class_name,
            methods={
                m.name: MethodInfo(m.name, m.num_returns, m.is_async) for m in info.methods
            },
            max_task_retries=info.max_task_retries,
            max_pending_calls=info.max_pending_calls,
            is_async=info.is_async,
        )


_BUILTIN_METHODS = {
    "__ray_ready__": MethodInfo("__ray_ready__"),
    "__ray_terminate__": MethodInfo("__ray_terminate__"),
}


class ActorMethod:
    """`handle.method`: call it with `.remote(...)`, or first `.options(...)`."""

    __slots__ = ("_handle", "_info", "_options")

    def __init__(self, handle: ActorHandle[Any], info: MethodInfo, options: CallOptions | None = None) -> None:
        self._handle = handle
        self._info = info
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.remote_in(self._handle._runtime(), *args, **kwargs)

    def remote_in(self, runtime: Any, *args: Any, **kwargs: Any) -> Any:
        """Call through `runtime` rather than the process's current one.

        actorhub's own machinery calls this: it must never start a cluster by accident, as
        the public path does when no cluster is initialized (for example during shutdown).
        """
        handle = self._handle
        state = handle._state
        options = self._options
        num_returns = self._info.num_returns if options is None else options.num_returns
        retries = None if options is None else options.max_task_retries
        name = self._info.name
        data, held = runtime.call_arguments(args, kwargs, f"{state.class_name}.{name}", stage=num_returns > 0)
        conn = runtime.connection(state.actor_id, state.class_name, state.max_task_retries, state.max_pending_calls)
        trace = _tracing.submit_context(f"{state.class_name}.{name}") if _tracing.active() else None
        ids = conn.submit(name, data, num_returns, retries, trace)
        if held:
            runtime.hold_until_settled(ids, held)
        refs = runtime.refs_for(ids)
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def options(self, **options: Any) -> ActorMethod:
        where = f"{self._handle._state.class_name}.{self._info.name}.options()"
        base = self._options or CallOptions(num_returns=self._info.num_returns)
        return ActorMethod(self._handle, self._info, base.merged(where, **options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly; use "
            f"{self._handle._state.class_name}.{self._info.name}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._handle._state.class_name}.{self._info.name})"


class ActorHandle(Generic[T]):
    """A handle to an actor; `handle.method.remote(...)` calls it and returns an ObjectRef."""

    def __init__(self, state: HandleState) -> None:
        self._state = state
        self._method_cache: dict[str, ActorMethod] = {}

    @staticmethod
    def _runtime() -> Any:
        from actorhub.runtime.runtime import current

        return current()

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_") and name not in _BUILTIN_METHODS:
            raise AttributeError(name)
        cached = self._method_cache.get(name)
        if cached is not None:
            return cached
        info = self._state.methods.get(name) or _BUILTIN_METHODS.get(name)
        if info is None:
            raise AttributeError(f"the {self._state.class_name} actor has no method {name!r}")
        method = ActorMethod(self, info)
        self._method_cache[name] = method
        return method

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorHandle, (self._state,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._state.actor_id == self._state.actor_id

    def __hash__(self) -> int:
        return hash(self._state.actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._state.class_name}, {self._state.actor_id})"

    @property
    def actor_id(self) -> str:
        return self._state.actor_id

    @property
    def class_name(self) -> str:
        return self._state.class_name


# ObjectRef is re-exported here for modules that build calls from handles.
__all__ = ["ActorHandle", "ActorMethod", "HandleState", "MethodInfo", "ObjectRef"]
