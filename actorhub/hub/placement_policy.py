"""Which node an actor goes to: Ray's scheduling strategies, as the hub applies them.

The actor table hands over the nodes an actor fits on right now (alive, its CPUs and other
resources free, not avoided after a failed start) and gets one back, or None to keep it
pending. Nothing here locks, talks to anyone or changes a node; the one state kept is the
SPREAD cursor.

The rules (Ray's, ARCHITECTURE.md "Placement"):
- A hard `NodeAffinitySchedulingStrategy`: that node only; waits while it is busy; a node that
  is gone or could never fit the actor makes it unschedulable (`unschedulable`). Soft: the same
  while the node is alive and could fit it; else as "DEFAULT".
- "SPREAD": round-robin, by node order, over the nodes that fit now.
- "DEFAULT": Ray's hybrid policy with k = 1. A node's score is its utilization (its most used
  resource's share in use: CPUs held by actors or lent to tasks, GPUs, memory, custom
  resources), or 0 below `SPREAD_THRESHOLD`. The creator's node wins while it fits now and its
  score is the lowest; else the node with the lowest score, then the lowest utilization, the
  fewest actors, the oldest. So the creator's node takes actors until it is half used (or
  busier than every other), then the least loaded node does.
- An actor that asks for nothing at all (num_cpus=0 and no other resources, not even 1 CPU to be
  placed) goes where the fewest actors are: Ray places those at random, so in effect spread.
"""

from __future__ import annotations

from actorhub._proto.v1 import common_pb2
from actorhub.hub.records import NodeRecord
from actorhub.hub.resources import EPSILON, describe, fits

__all__ = ["SPREAD_THRESHOLD", "PlacementPolicy", "utilization"]

# Ray's scheduler_spread_threshold: a node used below this share counts as unloaded.
SPREAD_THRESHOLD = 0.5


def utilization(node: NodeRecord) -> float:
    """The share in use of the node's most used resource."""
    used = 0.0
    if node.num_cpus > 0:
        used = (node.num_cpus - node.available_cpus + node.lent_cpus) / node.num_cpus
    for name, total in node.resources.items():
        if total > 0:
            used = max(used, (total - node.available.get(name, 0.0)) / total)
    return used


def _score(node: NodeRecord) -> float:
    used = utilization(node)
    return used if used >= SPREAD_THRESHOLD else 0.0


def could_fit(spec: common_pb2.ActorSpec, node: NodeRecord) -> bool:
    """Whether the node has, in all, what the actor asks for (free or not)."""
    need = max(spec.num_cpus, spec.placement_cpus)
    return node.num_cpus >= need - EPSILON and fits(spec.resources, node.resources)


def _asks_nothing(spec: common_pb2.ActorSpec) -> bool:
    return spec.num_cpus <= 0 and spec.placement_cpus <= 0 and not spec.resources


class PlacementPolicy:
    def __init__(self) -> None:
        # The order of the node the last SPREAD actor went to: the next goes to the one after.
        self._spread_after = 0

    def unschedulable(self, spec: common_pb2.ActorSpec, nodes: dict[str, NodeRecord],
                      fits_now: bool) -> str:
        """Why the actor's hard node affinity cannot hold ("" when it can, or it has none).

        `fits_now`: whether its node has room for it now (`_fail_on_unavailable` needs it)."""
        if not spec.node_id or spec.node_affinity_soft:
            return ""
        node = nodes.get(spec.node_id)
        strategy = f"its NodeAffinitySchedulingStrategy(soft=False) names node {spec.node_id}"
        if node is None or not node.alive:
            return f"{strategy}, which is not alive"
        if not could_fit(spec, node):
            need = max(spec.num_cpus, spec.placement_cpus)
            return (f"{strategy}, which could never fit it: it requires {describe(need, dict(spec.resources))} "
                    f"and the node has {describe(node.num_cpus, node.resources)}")
        if spec.node_affinity_fail_on_unavailable and not fits_now:
            return f"{strategy}, which has no room for it now (_fail_on_unavailable=True)"
        return ""

    def choose(self, spec: common_pb2.ActorSpec, candidates: list[NodeRecord],
               nodes: dict[str, NodeRecord]) -> NodeRecord | None:
        """The node for the actor among `candidates` (those it fits on now), or None: it waits."""
        if spec.node_id:
            target = nodes.get(spec.node_id)
            # A draining node takes nothing new: soft affinity to it goes anywhere, hard waits.
            if target is not None and target.alive and not target.draining and could_fit(spec, target):
                if target in candidates:
                    return target
                if not (spec.node_affinity_soft and spec.node_affinity_spill_on_unavailable):
                    return None  # it waits for room there
            elif not spec.node_affinity_soft:
                return None  # unschedulable: the table fails it first
            # Soft, and the node is gone, could never fit it, or is busy with spill: anywhere.
        if not candidates:
            return None
        if spec.spread and not spec.node_id:
            after = [n for n in candidates if n.order > self._spread_after]
            return min(after or candidates, key=lambda n: n.order)
        if _asks_nothing(spec):
            return min(candidates, key=lambda n: (n.actors, n.order))
        return _hybrid(candidates, spec.caller_node_id)

    def placed(self, spec: common_pb2.ActorSpec, node: NodeRecord) -> None:
        """The actor was given `node`."""
        if spec.spread and not spec.node_id:
            self._spread_after = node.order


def _hybrid(candidates: list[NodeRecord], preferred: str) -> NodeRecord:
    scores = {n.node_id: _score(n) for n in candidates}
    lowest = min(scores.values())
    if preferred in scores and scores[preferred] <= lowest + EPSILON:
        return next(n for n in candidates if n.node_id == preferred)
    return min(candidates, key=lambda n: (scores[n.node_id], utilization(n), n.actors, n.order))
