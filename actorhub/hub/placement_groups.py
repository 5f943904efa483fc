"""Placement groups as the hub keeps them: the records, and where a group's bundles fit.

No lock and no I/O here: `plan` decides, from the nodes' free resources, a node for each of
the bundles still to place, under the group's strategy, all of them or none (atomicity: a
group that cannot fully fit reserves nothing). The table (`placement_group_table.py`) holds
the records under the actor table's lock and reserves what `plan` chose.

Strategies, as Ray defines them:
- STRICT_PACK: every bundle on one node.
- PACK: on one node when one fits them all, else on as few nodes as the greedy order finds
  (nodes the group already uses first).
- STRICT_SPREAD: every bundle on a node of its own.
- SPREAD: distinct nodes while there are any that fit, then sharing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from actorhub._proto.v1 import hub_pb2
from actorhub.hub.resources import describe, fits, take

__all__ = [
    "CREATED",
    "PENDING",
    "REMOVED",
    "RESCHEDULING",
    "GroupRecord",
    "NodeRoom",
    "describe_bundles",
    "group_info",
    "plan",
]

PENDING = "PENDING"
CREATED = "CREATED"
RESCHEDULING = "RESCHEDULING"
REMOVED = "REMOVED"
# Strict placements of many bundles search; a cluster of many nodes could make that long.
_MAX_SEARCH_STEPS = 20_000


@dataclass
class GroupRecord:
    spec: hub_pb2.PlacementGroupSpec
    state: str = PENDING
    # Per bundle: the node it is reserved on ("" while it has none), and the GPUs it holds there.
    nodes: list[str] = field(default_factory=list)
    gpu_ids: list[list[int]] = field(default_factory=list)
    pending_reason: str = ""
    infeasible: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        count = len(self.spec.bundles)
        self.nodes = (self.nodes + [""] * count)[:count]
        self.gpu_ids = (self.gpu_ids + [[] for _ in range(count)])[:count]

    @property
    def group_id(self) -> str:
        return self.spec.placement_group_id

    def bundle(self, index: int) -> dict[str, float]:
        return dict(self.spec.bundles[index].resources)

    def unplaced(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if not node]


@dataclass
class NodeRoom:
    """A node as `plan` sees it: what is free there now ("CPU" included), and its load order."""

    node_id: str
    free: dict[str, float]
    rank: tuple[float, int, int] = (0.0, 0, 0)


def group_info(g: GroupRecord) -> hub_pb2.PlacementGroupInfo:
    return hub_pb2.PlacementGroupInfo(spec=g.spec, state=g.state, bundle_node_ids=g.nodes,
                                      pending_reason=g.pending_reason, infeasible=g.infeasible)


def describe_bundles(bundles: Sequence[Mapping[str, float]]) -> str:
    return "[" + ", ".join(describe(b.get("CPU", 0.0), {k: v for k, v in b.items() if k != "CPU"})
                           for b in bundles) + "]"


def plan(
    strategy: str, bundles: Sequence[Mapping[str, float]], todo: Sequence[int], placed: Mapping[int, str],
    rooms: Sequence[NodeRoom],
) -> dict[int, str] | None:
    """A node for each bundle index in `todo`, or None when they cannot all fit now.

    `placed`: the group's other bundles and their nodes (already reserved, so not in `rooms`'
    free amounts); the strict strategies hold for them too. `rooms` come least loaded first."""
    free = {r.node_id: dict(r.free) for r in sorted(rooms, key=lambda r: r.rank)}
    order = list(free)
    if strategy == "STRICT_PACK":
        return _strict_pack(bundles, todo, placed, free, order)
    if strategy == "PACK":
        together = _strict_pack(bundles, todo, placed, free, order)
        return together if together is not None else _greedy(bundles, todo, placed, free, order, pack=True)
    if strategy == "STRICT_SPREAD":
        return _strict_spread(bundles, todo, placed, free, order)
    return _greedy(bundles, todo, placed, free, order, pack=False)


def _sum(bundles: Sequence[Mapping[str, float]], todo: Sequence[int]) -> dict[str, float]:
    total: dict[str, float] = {}
    for i in todo:
        for name, amount in bundles[i].items():
            total[name] = total.get(name, 0.0) + amount
    return total


def _strict_pack(
    bundles: Sequence[Mapping[str, float]], todo: Sequence[int], placed: Mapping[int, str],
    free: dict[str, dict[str, float]], order: list[str],
) -> dict[int, str] | None:
    need = _sum(bundles, todo)
    used = set(placed.values())
    if len(used) > 1:
        return None
    candidates = [n for n in order if n in used] if used else order
    for node_id in candidates:
        if fits(need, free[node_id]):
            return {i: node_id for i in todo}
    return None


def _greedy(
    bundles: Sequence[Mapping[str, float]], todo: Sequence[int], placed: Mapping[int, str],
    free: dict[str, dict[str, float]], order: list[str], *, pack: bool,
) -> dict[int, str] | None:
    counts: dict[str, int] = {}
    for node_id in placed.values():
        counts[node_id] = counts.get(node_id, 0) + 1
    chosen: dict[int, str] = {}
    for i in todo:
        if pack:
            # Nodes the group uses, most used first, then the least loaded others.
            candidates = sorted(order, key=lambda n: (-counts.get(n, 0), order.index(n)))
        else:
            # Nodes the group does not use yet first, then the least used.
            candidates = sorted(order, key=lambda n: (counts.get(n, 0), order.index(n)))
        for node_id in candidates:
            if fits(bundles[i], free[node_id]):
                take(free[node_id], bundles[i])
                chosen[i] = node_id
                counts[node_id] = counts.get(node_id, 0) + 1
                break
        else:
            return None
    return chosen


def _strict_spread(
    bundles: Sequence[Mapping[str, float]], todo: Sequence[int], placed: Mapping[int, str],
    free: dict[str, dict[str, float]], order: list[str],
) -> dict[int, str] | None:
    taken = set(placed.values())
    nodes = [n for n in order if n not in taken]
    if len(nodes) < len(todo):
        return None
    # Largest bundles first: they have the fewest nodes to choose from.
    pending = sorted(todo, key=lambda i: -sum(bundles[i].values()))
    chosen: dict[int, str] = {}
    steps = 0

    def assign(k: int) -> bool:
        nonlocal steps
        if k == len(pending):
            return True
        i = pending[k]
        for node_id in nodes:
            steps += 1
            if steps > _MAX_SEARCH_STEPS:
                return False
            if node_id in chosen.values() or not fits(bundles[i], free[node_id]):
                continue
            chosen[i] = node_id
            if assign(k + 1):
                return True
            del chosen[i]
        return False

    return dict(chosen) if assign(0) else None

