"""The public lookups of named actors: `get_actor` and `list_named_actors`, asked of the hub.

Arguments are checked here, before any cluster is started or asked: a bad one raises
`OptionsError` (a ValueError) naming it. The system namespace is not the users': its actors
are looked up by actorhub's own code through `get_system_actor`, with an explicit runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorhub.exceptions import OptionsError
from actorhub.namespaces.rules import SYSTEM_NAMESPACE, validate_name, validate_namespace
from actorhub.runtime.task_context import namespace_of

if TYPE_CHECKING:
    from actorhub.api.actor_handle import ActorHandle
    from actorhub.runtime.runtime import Runtime


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """The live actor named `name` in `namespace` (default: this job's namespace).

    Raises OptionsError (a ValueError) for a name or namespace that is not a usable str, or
    the reserved system namespace; ValueError when there is no such actor;
    ControlPlaneUnavailableError when the hub is away (down, or restarting and recovering its
    state) for the whole control deadline: the lookup may be tried again.
    """
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    _checked("name", name, validate_name)
    if namespace is not None:
        _checked("namespace", namespace, validate_namespace)
    runtime = connected_runtime()
    return _lookup(runtime, name, namespace if namespace is not None else namespace_of(runtime))


def get_system_actor(runtime: Runtime, name: str) -> ActorHandle[Any]:
    """actorhub's own actor `name` (a lease desk, an executor) in the system namespace, looked up
    through `runtime`: the internal way in, which neither starts a cluster nor is refused."""
    return _lookup(runtime, name, SYSTEM_NAMESPACE)


def _lookup(runtime: Runtime, name: str, namespace: str) -> ActorHandle[Any]:
    # Imported here: actorhub.util re-exports this module, and the api imports actorhub.util.
    from actorhub.api.actor_handle import ActorHandle, HandleState

    info = runtime.hub.get_named_actor(name, namespace)
    return ActorHandle(HandleState.from_info(info), runtime)


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of live named actors in this job's namespace; with all_namespaces=True,
    a list of {"name": ..., "namespace": ...} over the whole cluster (the system one left out)."""
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    if not isinstance(all_namespaces, bool):
        raise OptionsError(
            f"list_named_actors(): all_namespaces={all_namespaces!r}: must be a bool, "
            f"not {type(all_namespaces).__name__}"
        )
    runtime = connected_runtime()
    actors = runtime.hub.list_actors(namespace_of(runtime), all_namespaces=all_namespaces, named_only=True)
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in actors if a.namespace != SYSTEM_NAMESPACE]
    return [a.name for a in actors]


def _checked(argument: str, value: object, check: Callable[[object], str]) -> None:
    """Run a namespaces.rules check; its TypeError or ValueError becomes an OptionsError."""
    try:
        check(value)
    except (TypeError, ValueError) as e:
        shown = repr(value)  # escapes lone surrogates: the message itself must encode
        shown = shown if len(shown) <= 60 else f"{shown[:60]}..."
        raise OptionsError(f"get_actor(): {argument}={shown}: {e}") from None
