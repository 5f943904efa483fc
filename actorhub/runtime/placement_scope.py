"""The placement group the calling code runs in, for get_current_placement_group() and for what
it creates (Ray's placement_group_capture_child_tasks).

An actor's is its process's, set once when its worker becomes the actor; a task's is a context
of the task while it runs in its executor (`enter_task`), and comes first. Pure: no actorhub imports.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["PlacementScope", "current", "enter_actor", "enter_task", "leave_task"]


@dataclass(frozen=True)
class PlacementScope:
    group_id: str
    bundle_index: int
    capture_child_tasks: bool


_actor_scope: PlacementScope | None = None
_task_scope: ContextVar[PlacementScope | None] = ContextVar("actorhub_task_placement_scope", default=None)


def enter_actor(group_id: str, bundle_index: int, capture_child_tasks: bool) -> None:
    """This process's actor runs in `group_id` (its worker, before the constructor)."""
    global _actor_scope
    _actor_scope = PlacementScope(group_id, bundle_index, capture_child_tasks) if group_id else None


def enter_task(group_id: str, bundle_index: int, capture_child_tasks: bool) -> Token[PlacementScope | None]:
    """The running task runs in `group_id` (its executor, while it runs)."""
    return _task_scope.set(PlacementScope(group_id, bundle_index, capture_child_tasks))


def leave_task(token: Token[PlacementScope | None]) -> None:
    _task_scope.reset(token)


def current() -> PlacementScope | None:
    return _task_scope.get() or _actor_scope
