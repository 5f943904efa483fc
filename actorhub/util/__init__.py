"""Utilities from Ray's `ray.util` that apply to actorhub."""

from __future__ import annotations

from typing import Any

from actorhub._proto.v1 import hub_pb2
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.runtime.serialization import deregister_serializer, register_serializer
from actorhub.util import scheduling_strategies
from actorhub.util._serializability import FailureTuple, inspect_serializability

__all__ = [
    "FailureTuple",
    "deregister_serializer",
    "inspect_serializability",
    "list_named_actors",
    "register_serializer",
    "scheduling_strategies",
]



def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of live named actors in this job's namespace; with all_namespaces=True,
    a list of {"name": ..., "namespace": ...} over the whole cluster."""
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    runtime = connected_runtime()
    reply = runtime.hub.ListActors(
        hub_pb2.ListActorsRequest(namespace=runtime.namespace, all_namespaces=all_namespaces, named_only=True)
    )
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in reply.actors if a.namespace != SYSTEM_NAMESPACE]
    return [a.name for a in reply.actors]
