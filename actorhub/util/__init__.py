"""Utilities from Ray's `ray.util` that apply to actorhub."""

from __future__ import annotations

from actorhub.namespaces.lookup import list_named_actors
from actorhub.runtime.serialization import deregister_serializer, register_serializer
from actorhub.util import scheduling_strategies
from actorhub.util._serializability import FailureTuple, inspect_serializability
from actorhub.util.actor_pool import ActorPool
from actorhub.util.node_address import get_node_ip_address
from actorhub.util.node_drain import drain_node
from actorhub.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "ActorPool",
    "FailureTuple",
    "PlacementGroup",
    "deregister_serializer",
    "drain_node",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "list_named_actors",
    "placement_group",
    "placement_group_table",
    "register_serializer",
    "remove_placement_group",
    "scheduling_strategies",
]
