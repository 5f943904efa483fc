"""Lease shapes: what one task asks a node for besides CPUs, and which nodes could ever give it.

A shape is the task's resource vector ("GPU", "memory", custom names) as a sorted tuple of
(name, amount), so that it can key the submitter's lease pools; CPU-only tasks have the empty
shape, and every function here answers for them with one test of it. The amounts follow the
rules of `hub/resources.py` (checked in `tasks/options.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from actorhub.hub.resources import EPSILON, describe

Shape = tuple[tuple[str, float], ...]


def shape_of(vector: Mapping[str, float]) -> Shape:
    return tuple(sorted((name, amount) for name, amount in vector.items() if amount > 0))


def copies_fit(cpus: float, shape: Shape, node_cpus: float, node_resources: Mapping[str, float]) -> int:
    """How many tasks of (`cpus`, `shape`) a node of these totals could run at once."""
    count = int((node_cpus + EPSILON) // cpus) if cpus > 0 else -1
    for name, amount in shape:
        by_name = int((node_resources.get(name, 0.0) + EPSILON) // amount)
        count = by_name if count < 0 else min(count, by_name)
    return count


def demand_text(cpus: float, shape: Shape) -> str:
    """A task's demand as Ray's warning writes it: {CPU: 1, GPU: 1}."""
    return describe(cpus, dict(shape))
