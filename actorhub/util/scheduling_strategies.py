"""Where an actor or task may run; Ray's `ray.util.scheduling_strategies` names.

The strategies themselves, as Ray defines them (ARCHITECTURE.md, "Scheduling strategies"):
- "DEFAULT" (or None): a task with arguments in a node's store goes to the node holding most of
  them while it has room. Else Ray's hybrid policy: the caller's node while it fits now and is
  at most as loaded as the least loaded node, a node under half used counting as unloaded;
  else the least loaded node that fits.
- "SPREAD": round-robin over the nodes that fit.
- `NodeAffinitySchedulingStrategy`: one node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (from `get_runtime_context().get_node_id()`).

    While that node is alive and could ever fit the request, it runs there only, waiting for
    room if the node is busy, whatever `soft` says. If the node is gone (or never existed) or
    cannot fit it, `soft=False` fails it (`TaskUnschedulableError`, `ActorUnschedulableError`)
    and `soft=True` places it as "DEFAULT" would. Ray's private keywords:
    `_spill_on_unavailable` (with soft) runs it elsewhere instead of waiting for a busy node;
    `_fail_on_unavailable` (without soft) fails it instead of waiting.
    """

    node_id: str
    soft: bool = False
    _spill_on_unavailable: bool = False
    _fail_on_unavailable: bool = False

    def __post_init__(self) -> None:
        from actorhub.exceptions import OptionsError

        if not isinstance(self.node_id, str) or not self.node_id:
            raise OptionsError(f"NodeAffinitySchedulingStrategy needs a node_id string, not {self.node_id!r}")
        for name in ("soft", "_spill_on_unavailable", "_fail_on_unavailable"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"NodeAffinitySchedulingStrategy: {name} must be a bool, "
                                   f"not {type(getattr(self, name)).__name__}")
        if self._spill_on_unavailable and not self.soft:
            raise OptionsError("NodeAffinitySchedulingStrategy: _spill_on_unavailable=True needs soft=True")
        if self._fail_on_unavailable and self.soft:
            raise OptionsError("NodeAffinitySchedulingStrategy: _fail_on_unavailable=True needs soft=False")


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run in a placement group's bundle `placement_group_bundle_index` (-1: any of its bundles).

    `placement_group_capture_child_tasks=True`: what the actor creates without a strategy of its
    own runs in the group too (Ray's rule). The request must fit the bundle (or some bundle)."""

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None

    def __post_init__(self) -> None:
        from actorhub.exceptions import OptionsError
        from actorhub.util.placement_group import PlacementGroup

        group = self.placement_group
        if group is not None and not isinstance(group, PlacementGroup):
            raise OptionsError(f"PlacementGroupSchedulingStrategy: placement_group must be a PlacementGroup or "
                               f"None, not {type(group).__name__}")
        index = self.placement_group_bundle_index
        if isinstance(index, bool) or not isinstance(index, int):
            raise OptionsError(f"PlacementGroupSchedulingStrategy: placement_group_bundle_index must be an int, "
                               f"not {type(index).__name__}")
        count = len(group._bundles) if group is not None and group._bundles is not None else None
        if index < -1 or (count is not None and index >= count):
            valid = f"0-{count - 1}" if count else "none"
            raise OptionsError(f"PlacementGroupSchedulingStrategy: placement_group_bundle_index {index} is out of "
                               f"range: use -1 (any bundle) or a bundle index ({valid})")
        capture = self.placement_group_capture_child_tasks
        if capture is not None and not isinstance(capture, bool):
            raise OptionsError("PlacementGroupSchedulingStrategy: placement_group_capture_child_tasks must be a "
                               f"bool or None, not {type(capture).__name__}")
