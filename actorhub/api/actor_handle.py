"""ActorHandle: a reference to a running actor, passable to any task, actor or application.

A handle pickles to the actor's id and what a caller needs to know about its methods; the
receiving process finds the actor's address through its own hub connection.

A handle keeps the runtime it was made in (created, looked up or unpickled), and its calls go
through that runtime. So actorhub's own machinery calls actors with plain `.remote()` on handles
it made through its explicit runtime: no second API, and no way to start a cluster. A handle
used after its runtime shut down raises RuntimeShutDownError rather than starting a new
cluster (its actor is not in one), and a call looks up no current runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from actorhub.api import arg_checks, typed
from actorhub.api.arg_checks import ArgsCheck
from actorhub.api.options import CallOptions, OptionsError
from actorhub.exceptions import RuntimeShutDownError
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_ref import ObjectRef
from actorhub.runtime.object_ref_generator import streaming_result
from actorhub.runtime.runtime import Runtime, current, current_or_none
from actorhub.wire.records import ActorInfo, MethodInfo

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class TypedActorMethod(Protocol[P, R]):
    """What a type checker sees `handle.method` of an `ActorHandle[Cls]` as, with actorhub's mypy
    plugin (`plugins = actorhub.mypy_plugin`): the method's own parameters, its result a ref to
    what it returns. At run time it is an `ActorMethod`."""

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]: ...

    def options(self, **options: Any) -> Any: ...


@dataclass(frozen=True)
class HandleState:
    """Everything a handle carries; identical in every process that holds the handle."""

    actor_id: str
    class_name: str
    methods: dict[str, MethodInfo] = field(hash=False)
    max_task_retries: int = 0
    max_pending_calls: int = -1
    is_async: bool = False
    concurrency_groups: tuple[str, ...] = ()

    @classmethod
    def from_info(cls, info: ActorInfo) -> HandleState:
        return cls(
            actor_id=info.actor_id,
            class_name=info.class_name,
            methods={m.name: m for m in info.methods},
            max_task_retries=info.max_task_retries,
            max_pending_calls=info.max_pending_calls,
            is_async=info.is_async,
            concurrency_groups=info.concurrency_groups,
        )


_BUILTIN_METHODS = {
    "__ray_ready__": MethodInfo("__ray_ready__"),
    "__ray_terminate__": MethodInfo("__ray_terminate__"),
}


class ActorMethod:
    """`handle.method`: call it with `.remote(...)`, or first `.options(...)`."""

    __slots__ = ("_handle", "_info", "_options")

    def __init__(self, handle: HandleCore, info: MethodInfo, options: CallOptions | None = None) -> None:
        # The handle's core, not the handle: a handle caches its methods, and a method that
        # pointed back at it would make a cycle only the garbage collector frees, keeping the
        # actor referenced long after the program dropped its last handle (actor_refs.py).
        self._handle = handle
        self._info = info
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._handle
        runtime = handle._runtime
        if runtime is None or runtime.closed:
            runtime = handle._bind()
        checks = handle._checks
        if checks is None:
            checks = handle._checks = handle._method_checks()
        check = checks.get(self._info.name)
        if check is not None:
            check(args, kwargs)  # TypeError here, before anything is sent
        return self._call(runtime, args, kwargs)

    def _call(
        self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any], into: ItemStream | None = None
    ) -> Any:
        """Queue the call on its actor's connection in `runtime`; returns its refs. With `into`,
        a streaming call whose items go there; returns only the ref of its end."""
        handle = self._handle
        state = handle._state
        options = self._options
        info = self._info
        num_returns = (info.generator or info.num_returns) if options is None else options.num_returns
        # A streaming call has one result, its end; its items go to `stream` as they come.
        stream = into or (ItemStream(runtime.objects, runtime.address) if isinstance(num_returns, str) else None)
        count = num_returns if isinstance(num_returns, int) and stream is None else 1
        retries = None if options is None else options.max_task_retries
        name = info.name
        data, held = runtime.call_arguments(args, kwargs, f"{state.class_name}.{name}", stage=count > 0)
        conn = runtime.connection(state.actor_id, state.class_name, state.max_task_retries, state.max_pending_calls)
        trace = _tracing.submit_context(f"{state.class_name}.{name}") if _tracing.active() else None
        group = None if options is None else options.concurrency_group
        ids = conn.submit(name, data, count, retries, trace, group, stream)
        if held:
            runtime.hold_until_settled(ids, held)
        refs = runtime.refs_for(ids)
        if into is not None:
            return refs[0]
        if stream is not None:
            return streaming_result(str(num_returns), stream, refs[0], runtime.objects, runtime.address)
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def remote_into(self, stream: ItemStream, *args: Any) -> ObjectRef[None]:
        """A streaming call whose items go to `stream` (actorhub's own: a generator task's
        execute, whose stream outlives its retries); returns the ref of the call's end."""
        runtime = self._handle._runtime
        if runtime is None or runtime.closed:
            runtime = self._handle._bind()
        end: ObjectRef[None] = self._call(runtime, args, {}, into=stream)
        return end

    def options(self, **options: Any) -> ActorMethod:
        where = f"{self._handle._state.class_name}.{self._info.name}.options()"
        base = self._options or CallOptions.parse(where, num_returns=self._info.generator or self._info.num_returns)
        merged = base.merged(where, **options)
        group = merged.concurrency_group
        if group is not None and group not in self._handle._state.concurrency_groups:
            defined = list(self._handle._state.concurrency_groups) or "none"
            raise OptionsError(
                f"invalid options for {where}: concurrency_group={group!r}: the actor defines no such "
                f"concurrency group (defined: {defined})"
            )
        return ActorMethod(self._handle, self._info, merged)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly; use "
            f"{self._handle._state.class_name}.{self._info.name}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._handle._state.class_name}.{self._info.name})"


class HandleCore:
    """What a handle and the methods taken from it share. A method keeps it, so the actor stays
    referenced while either the handle or one of its methods lives."""

    __slots__ = ("_checks", "_ref", "_runtime", "_state")

    def __init__(self, state: HandleState, runtime: Runtime | None, ref: ObjectRef[Any] | None) -> None:
        self._state = state
        # Argument checks of the actor's methods, by name (api/arg_checks.py): the class's, on the
        # handle its creator got; made from the method table's signatures on first call elsewhere.
        self._checks: dict[str, ArgsCheck] | None = None
        # The runtime its calls go through; None only when unpickled in a process with none.
        self._runtime = runtime
        # A strong handle's reference to its actor (runtime/actor_refs.py); None: a weak handle.
        self._ref = ref

    def _method_checks(self) -> dict[str, ArgsCheck]:
        state = self._state
        checks: dict[str, ArgsCheck] = dict(
            arg_checks.for_methods(state.class_name, ((m.name, m.signature) for m in state.methods.values()))
        )
        for m in state.methods.values():
            if m.typed:  # a typed actor's method: its hints travelled with it (api/typed.py)
                check = typed.unpack(f"{state.class_name}.{m.name}", m.typed)
                if check is not None:
                    checks[m.name] = check
        return checks

    def _bind(self) -> Runtime:
        """Off the fast path: the handle has no runtime, or its runtime was shut down."""
        if self._runtime is not None:
            raise RuntimeShutDownError(
                f"{self!r} belongs to an actorhub runtime that was shut down; "
                "after init(), look the actor up again (get_actor) or create a new one"
            )
        # Unpickled before this process had a runtime: take the process's one now, and never
        # start a cluster for it: its actor lives in the cluster the handle came from.
        self._runtime = current()
        return self._runtime

    def __repr__(self) -> str:
        return f"Actor({self._state.class_name}, {self._state.actor_id})"


class ActorHandle(Generic[T]):
    """A handle to an actor; `handle.method.remote(...)` calls it and returns an ObjectRef.

    A strong handle (`ref` set: made by the actor's creator, or unpickled from one) keeps a
    non-detached actor alive; a weak one (get_actor, current_actor, detached actors) does not.
    """

    def __init__(self, state: HandleState, runtime: Runtime | None, ref: ObjectRef[Any] | None = None) -> None:
        self._state = state
        self._core = HandleCore(state, runtime, ref)
        self._method_cache: dict[str, ActorMethod] = {}

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_") and name not in _BUILTIN_METHODS:
            raise AttributeError(name)
        cached = self._method_cache.get(name)
        if cached is not None:
            return cached
        info = self._state.methods.get(name) or _BUILTIN_METHODS.get(name)
        if info is None:
            raise AttributeError(f"the {self._state.class_name} actor has no method {name!r}")
        method = ActorMethod(self._core, info)
        self._method_cache[name] = method
        return method

    def __reduce__(self) -> tuple[Any, ...]:
        ref = self._core._ref
        if ref is None:
            return (_rebuild_handle, (self._state,))
        # The ref pickles as refs do: its receiver becomes a borrower of the actor, or, pickled
        # where nobody can follow, the actor is kept while its owner lives.
        return (_rebuild_handle, (self._state, ref))

    def __copy__(self) -> ActorHandle[T]:
        return self  # immutable; and a copy through __reduce__ would count as an escaped pickle

    def __deepcopy__(self, memo: dict[int, Any]) -> ActorHandle[T]:
        return self

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


def _rebuild_handle(state: HandleState, ref: ObjectRef[Any] | None = None) -> ActorHandle[Any]:
    """An unpickled handle calls through the runtime of the process that unpickles it."""
    return ActorHandle(state, current_or_none(), ref)


# ObjectRef is re-exported here for modules that build calls from handles.
__all__ = ["ActorHandle", "ActorMethod", "HandleCore", "HandleState", "MethodInfo", "ObjectRef", "TypedActorMethod"]
