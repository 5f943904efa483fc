"""Ray's state API (`ray.util.state`): what a running cluster holds, listed and filtered."""

from actorhub.exceptions import StateApiError
from actorhub.util.state.api import (
    get_actor,
    get_node,
    get_placement_group,
    list_actors,
    list_jobs,
    list_nodes,
    list_objects,
    list_placement_groups,
    list_tasks,
    summarize_tasks,
)
from actorhub.util.state.schema import ActorState, NodeState, ObjectState, PlacementGroupState, TaskState

# Ray's name for the same error.
RayStateApiException = StateApiError

__all__ = [
    "ActorState",
    "NodeState",
    "ObjectState",
    "PlacementGroupState",
    "RayStateApiException",
    "StateApiError",
    "TaskState",
    "get_actor",
    "get_node",
    "get_placement_group",
    "list_actors",
    "list_jobs",
    "list_nodes",
    "list_objects",
    "list_placement_groups",
    "list_tasks",
    "summarize_tasks",
]
