"""The rows the state API returns, with Ray's names (`ray.util.state.common`).

Each is a frozen dataclass. `row["state"]` works as well as `row.state`, as Ray's rows do, and
`asdict()` gives plain JSON-ready values. Fields Ray has that actorhub does not track are left
out rather than filled with made-up values; fields actorhub adds come after Ray's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class StateSchema:
    """What every row shares: item access by column name, and a dict form."""

    def __getitem__(self, column: str) -> Any:
        if column not in self.columns():
            raise KeyError(column)
        return getattr(self, column)

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.column_types())

    @classmethod
    def column_types(cls) -> dict[str, str]:
        """Each column's name and its type's name ("str", "int", "bool", "dict[str, float]"...)."""
        return {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class ActorState(StateSchema):
    actor_id: str
    class_name: str
    state: str
    """PENDING_CREATION, ALIVE, RESTARTING or DEAD."""
    job_id: str
    name: str
    node_id: str
    pid: int
    ray_namespace: str
    is_detached: bool
    num_restarts: int
    death_cause: dict[str, Any] | None
    """Ray's shape: {"actor_died_error_context": {"error_message": ...}}; None while alive."""
    repr_name: str = ""
    pending_reason: str = ""
    """Why it is not placed yet (an infeasible request says so here, as `actorhub status` does)."""
    incarnation: int = 0


@dataclass(frozen=True)
class NodeState(StateSchema):
    node_id: str
    node_ip: str
    is_head_node: bool
    state: str
    """ALIVE or DEAD."""
    state_message: str
    """"draining" or "drained" for a node `actorhub drain` is taking down, else ""."""
    node_name: str
    resources_total: dict[str, float]
    resources_available: dict[str, float] = field(default_factory=dict)
    object_store_used_bytes: int = 0
    object_store_capacity_bytes: int = 0


@dataclass(frozen=True)
class TaskState(StateSchema):
    """Tasks of one function on one node in one state. actorhub keeps counts of tasks, not a
    record per task attempt, so a row stands for `count` tasks (Ray's has one per attempt)."""

    name: str
    func_or_class_name: str
    state: str
    """RUNNING, FINISHED or FAILED."""
    node_id: str
    type: str
    count: int


@dataclass(frozen=True)
class ObjectState(StateSchema):
    object_id: str
    object_size: int
    task_status: str
    """FINISHED once the value exists (inline at its owner or in a store), PENDING before,
    FAILED for an error value."""
    reference_type: str
    """LOCAL_REFERENCE while its owner holds a reference, else BORROWED (held by borrowers)."""
    ip: str
    """The owner's."""
    owner: str
    """"driver", or "<Class> actor <id>"."""
    node_ids: list[str]
    """The nodes whose store holds a copy."""


@dataclass(frozen=True)
class PlacementGroupState(StateSchema):
    placement_group_id: str
    name: str
    creator_job_id: str
    state: str
    """PENDING, CREATED, REMOVED or RESCHEDULING."""
    strategy: str
    is_detached: bool
    bundles: list[dict[str, Any]]
    """{"bundle_id": index, "node_id": where it is reserved ("" while pending), "unit_resources": {...}}."""
    ray_namespace: str = ""
    pending_reason: str = ""
