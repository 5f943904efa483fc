"""The public lookups of named actors: `get_actor` and `list_named_actors`, asked of the hub."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorhub.namespaces.rules import SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from actorhub.api.actor_handle import ActorHandle


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """The live actor named `name` in `namespace` (default: this job's namespace).

    Raises ValueError when there is none, and RpcFailedError when the hub does not answer
    (RpcDeadlineExceededError within the control deadline, PeerUnavailableError if it is gone).
    """
    # Imported here: actorhub.util re-exports this module, and the api imports actorhub.util.
    from actorhub.api.actor_handle import ActorHandle, HandleState
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs a non-empty actor name")
    runtime = connected_runtime()
    ns = namespace if namespace is not None else runtime.namespace
    info = runtime.hub.get_named_actor(name, ns)
    return ActorHandle(HandleState.from_info(info), runtime)


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of live named actors in this job's namespace; with all_namespaces=True,
    a list of {"name": ..., "namespace": ...} over the whole cluster."""
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    runtime = connected_runtime()
    actors = runtime.hub.list_actors(runtime.namespace, all_namespaces=all_namespaces, named_only=True)
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in actors if a.namespace != SYSTEM_NAMESPACE]
    return [a.name for a in actors]
