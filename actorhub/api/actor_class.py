"""ActorClass: what `@actorhub.remote` makes of a class; `.remote(...)` creates an actor."""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

from actorhub.api import arg_checks, typed
from actorhub.api.actor_handle import ActorHandle, HandleState, MethodInfo
from actorhub.api.cluster import connected_runtime, detached_by_default
from actorhub.api.options import UINT32_MAX, ActorOptions, OptionsError
from actorhub.api.typed import TypedMethod
from actorhub.runtime import serialization as _serialization
from actorhub.runtime import task_context
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.ids import new_id
from actorhub.runtime.object_ref import ObjectRef, capturing_refs
from actorhub.runtime.object_ref_generator import STREAMING_MODES
from actorhub.runtime.runtime import Runtime
from actorhub.runtime_env import context as runtime_env_context
from actorhub.util.placement_group import placed_in_group
from actorhub.wire.records import ActorSpec
from actorhub.wire.rpc import check_message_size

T = TypeVar("T")
NUM_RETURNS_ATTR = "__actorhub_num_returns__"
CONCURRENCY_GROUP_ATTR = "__actorhub_concurrency_group__"


def method_infos(cls: type, typed_methods: dict[str, TypedMethod] | None = None) -> dict[str, MethodInfo]:
    infos: dict[str, MethodInfo] = {}
    checks = arg_checks.for_class(cls)
    for name in dir(cls):
        if name.startswith("__"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        func = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
        if not callable(func):
            continue
        is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        declared = getattr(func, NUM_RETURNS_ATTR, None)
        generator = _generator_mode(cls, name, func, declared)
        infos[name] = MethodInfo(
            name, 1 if generator else _num_returns(cls, name, 1 if declared is None else declared), is_async,
            getattr(func, CONCURRENCY_GROUP_ATTR, ""), generator, arg_checks.text_of(checks.get(name)),
            typed_methods[name].blob if typed_methods and name in typed_methods else b"",
        )
    return infos


def _generator_mode(cls: type, name: str, func: Any, declared: object) -> str:
    """"streaming" or "dynamic" when `cls.name`'s items stream (a generator method streams
    unless it declares a count, as in Ray); "" otherwise."""
    inner = inspect.unwrap(func)
    is_generator = inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner)
    if declared is None:
        return "streaming" if is_generator else ""
    if declared not in STREAMING_MODES:
        return ""
    if not is_generator:
        raise OptionsError(
            f"invalid options for {cls.__name__}.{name}: num_returns={declared!r} needs a generator "
            "method (one that yields)"
        )
    return str(declared)


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
        # A typed actor's checks (api/typed.py), by method name: hints read (and refused) now.
        self._typed = typed.for_class(cls) if options.typed else None
        if options.checkpoint_interval and not all(
            callable(getattr(cls, hook, None)) for hook in ("__actorhub_checkpoint__", "__actorhub_restore__")
        ):
            raise OptionsError(f"invalid options for {cls.__name__}: checkpoint_interval needs the class to define "
                               "__actorhub_checkpoint__(self) and __actorhub_restore__(self, state)")
        self._methods = method_infos(cls, self._typed)
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
        # Arguments that cannot bind raise TypeError here, before the cluster is involved; the
        # handle checks its methods' arguments the same way.
        checks: dict[str, Any] = dict(arg_checks.for_class(self._cls))
        if self._typed is not None:
            checks.update(self._typed)
        check_init = checks.get(arg_checks.CONSTRUCTOR)
        if check_init is not None:
            check_init(args, kwargs)
        handle = self._create(connected_runtime(), args, kwargs)
        if handle._state.class_name == self._cls.__name__:  # get_if_exists may find another class's actor
            handle._core._checks = checks
        return handle

    def _create(self, runtime: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActorHandle[T]:
        """Create the actor through `runtime`: see create_actor, the way in for everything but `remote`."""
        options = self._options
        name = self._cls.__name__
        if options.get_if_exists and not options.name:
            raise OptionsError(f"invalid options for {name}: get_if_exists=True needs a name")
        if not self._pickled:
            self._pickled.append(_serialization.dumps(self._cls))
        max_concurrency = options.max_concurrency or (0 if self._is_async else 1)
        groups = options.concurrency_groups or {}
        for info in self._methods.values():
            if info.concurrency_group and info.concurrency_group not in groups:
                raise OptionsError(
                    f"invalid options for {name}: method {info.name} is in concurrency group "
                    f"{info.concurrency_group!r}, which concurrency_groups does not define "
                    f"(defined: {sorted(groups) or 'none'})"
                )
        with capturing_refs() as held:
            init_args = _serialization.dumps_args(args, kwargs, f"{name}.__init__")
        check_message_size(
            f"the class and constructor arguments of {name}", len(init_args) + len(self._pickled[0]),
            runtime.max_message_bytes,
        )
        in_task = task_context.running_task() is not None
        affinity = options.affinity
        job_namespace = task_context.namespace_of(runtime)
        spec = ActorSpec(
            actor_id=new_id(12),
            class_name=name,
            pickled_class=self._pickled[0],
            init_args=init_args,
            name=options.name or "",
            namespace=options.namespace if options.namespace is not None else job_namespace,
            detached=options.detached if options.lifetime is not None else detached_by_default(runtime),
            max_restarts=options.max_restarts,
            max_task_retries=options.max_task_retries,
            max_concurrency=max_concurrency,
            max_pending_calls=options.max_pending_calls,
            num_cpus=options.num_cpus,
            owner_job_id=task_context.job_id_of(runtime),
            # One made in a task belongs to the task's job, not to the executor (a system actor
            # that outlives every job): it ends with that job, as in Ray.
            owner_actor_id="" if in_task else runtime.actor_id,
            job_namespace=job_namespace,
            methods=tuple(self._methods.values()),
            is_async=self._is_async,
            hub_address=runtime.hub_address,
            node_id=options.node_id,
            concurrency_groups=tuple(groups.items()),
            runtime_env=self._runtime_env(runtime, options),
            resources=tuple(sorted(options.resource_vector.items())),
            placement_cpus=options.placement_cpus,
            spread=options.spread,
            node_affinity_soft=bool(affinity and affinity.soft),
            spill_on_unavailable=bool(affinity and affinity._spill_on_unavailable),
            fail_on_unavailable=bool(affinity and affinity._fail_on_unavailable),
            caller_node_id=runtime.node_id,
            trace_context=tuple(_tracing.submit_context(name, "create").items()) if _tracing.active() else (),
            restart_window_s=options.restart_window_s or 0.0,
            checkpoint_every_calls=int((options.checkpoint_interval or {}).get("calls", 0)),
            checkpoint_every_s=float((options.checkpoint_interval or {}).get("seconds", 0.0)),
        )
        spec = placed_in_group(spec, options.scheduling_strategy)  # a placement group's bundle resources
        # A taken name raises ValueError; a hub that is away (down, or restarting) is waited for
        # within the create_actor deadline, then raises ControlPlaneUnavailableError. Repeating
        # the call is safe: the hub knows the actor by its id.
        created = runtime.hub.create_actor(spec, options.get_if_exists)
        state = HandleState.from_info(created)
        if held:
            self._hold_arguments(runtime, spec, created.actor_id, held)
        if spec.detached or created.actor_id != spec.actor_id:
            # Weak, as in Ray: a detached actor lives until killed, and an existing actor that
            # get_if_exists found belongs to its creator's references, not to this handle.
            return ActorHandle(state, runtime)
        return ActorHandle(state, runtime, runtime.owned_actors.own(created.actor_id, name))

    @staticmethod
    def _runtime_env(runtime: Runtime, options: ActorOptions) -> str:
        """The actor's env as the wire carries it: its own over this process's, resolved (its
        packages uploaded). actorhub's own actors inherit nothing: a task executor is given the
        resolved env of the tasks it will run, a lease desk none."""
        if options._system:
            return options.runtime_env.to_json() if options.runtime_env is not None else ""
        return runtime_env_context.effective_env(runtime, options.runtime_env)

    @staticmethod
    def _hold_arguments(runtime: Runtime, spec: ActorSpec, actor_id: str, held: list[ObjectRef[Any]]) -> None:
        """The refs and strong handles inside a new actor's constructor arguments."""
        if actor_id != spec.actor_id:
            return  # get_if_exists found another actor: these arguments went nowhere
        if spec.max_restarts != 0 or spec.max_pending_calls != -1:
            # A restart runs the constructor again from the same bytes (and a pending-calls
            # limit leaves no room for the readiness call): kept while this process lives.
            for ref in held:
                runtime.objects.mark_escaped(ref.hex())
            return
        runtime.hold_until_constructed(actor_id, spec.class_name, spec.max_task_retries, held)

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__qualname__})"


def create_actor(runtime: Runtime, actor_class: ActorClass[T], /, *args: Any, **kwargs: Any) -> ActorHandle[T]:
    """Create an actor of `actor_class` through `runtime`; the handle keeps that runtime.

    actorhub's own machinery (lease desks, task executors) creates its actors with this, with
    the runtime it was given, so it can never start a cluster by accident as the public
    `ActorClass.remote` may. A module function, not a method: the public class keeps one way in.
    """
    return actor_class._create(runtime, args, kwargs)
