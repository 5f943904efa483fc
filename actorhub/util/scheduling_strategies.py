"""Where an actor or task may run; Ray's `ray.util.scheduling_strategies` names."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeAffinitySchedulingStrategy"]


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (from `get_runtime_context().get_node_id()`).

    `soft=True` is not offered: placement on that node or nowhere is what callers rely on.
    """

    node_id: str
    soft: bool = False

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("NodeAffinitySchedulingStrategy needs a node_id")
        if self.soft:
            raise ValueError("NodeAffinitySchedulingStrategy(soft=True) is not supported; use soft=False")
