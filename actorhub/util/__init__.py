"""Utilities from Ray's `ray.util` that apply to actorhub."""

from __future__ import annotations

from actorhub.namespaces.lookup import list_named_actors
from actorhub.runtime.serialization import deregister_serializer, register_serializer
from actorhub.util import scheduling_strategies
from actorhub.util._serializability import FailureTuple, inspect_serializability
from actorhub.util.actor_pool import ActorPool
from actorhub.util.node_address import get_node_ip_address

__all__ = [
    "ActorPool",
    "FailureTuple",
    "deregister_serializer",
    "get_node_ip_address",
    "inspect_serializability",
    "list_named_actors",
    "register_serializer",
    "scheduling_strategies",
]
