"""The autoscaler's decisions, with no processes, RPCs or sleeps: what to launch and what to stop.

Given the cluster config, the nodes (the hub's view of their load, the provider's of their type)
and the demands that wait, `Planner.plan` returns a `Plan`. The rules, after Ray's autoscaler:
- Every node type keeps its `min_workers` running.
- `request_resources()` bundles are packed onto the nodes' *totals* (a standing request for
  capacity, used or not): nodes launched for it, or holding part of it, are kept.
- Waiting demands (tasks, actors, placement groups) are packed first-fit, largest first, onto
  what nodes have *available*; nodes still starting count with their whole type. What does not
  fit makes nodes: repeatedly, the type whose one node would take the most of what is left
  (types with GPUs only for work that needs GPUs, then the fullest such node, then the type's
  name), within each type's and the cluster's `max_workers`, and at most max(5,
  upscaling_speed x nodes) starting at a time.
- A demand no node type and no running node could ever hold is infeasible: reported, never
  launched for (and so never launched for again on the next round).
- A worker idle (no actors, nothing lent to tasks, all its resources free, no objects of its own
  in its store) for `idle_timeout_minutes` is stopped, unless min_workers needs it, a resource
  request holds it, or a waiting demand was just packed onto it. The head is never stopped.
- A node the hub has not listed for `REGISTER_TIMEOUT_S` since its launch, or since it last did
  (a hub restart hides nodes for a few seconds only), is stopped.
Placement groups: STRICT_PACK's bundles go on one node (packed as their sum), STRICT_SPREAD's each
on a node of its own; PACK and SPREAD are best effort in Ray, so their bundles pack one by one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from actorhub.autoscaler.config import ClusterConfig
from actorhub.wire.autoscaler import AutoscalerView, NodeLoad

EPSILON = 1e-9
REGISTER_TIMEOUT_S = 60.0
MIN_CONCURRENT_LAUNCHES = 5


@dataclass(frozen=True)
class WorkerNode:
    """A node the provider started, as the autoscaler sees it."""

    node_id: str
    node_type: str
    load: NodeLoad | None  # None: not registered with the hub (yet, or any more)
    launched_at: float  # or, once registered, when the hub last listed it
    holds_objects: bool = False  # objects of its own (not copies) in its store


@dataclass(frozen=True)
class Plan:
    launch: dict[str, int] = field(default_factory=dict)
    terminate: list[tuple[str, str]] = field(default_factory=list)  # (node id, why)
    infeasible: list[dict[str, float]] = field(default_factory=list)
    waiting: list[dict[str, float]] = field(default_factory=list)
    """Demands left without a node because max_workers (or the launch rate) stops more."""


@dataclass
class _Item:
    """One thing to pack: a vector, and the group whose items must land on distinct nodes."""

    need: dict[str, float]
    spread_group: int = -1


@dataclass
class _Bin:
    node_id: str  # "" for a node this plan launches
    node_type: str
    free: dict[str, float]
    spread_groups: set[int] = field(default_factory=set)

    def take(self, item: _Item) -> bool:
        if item.spread_group >= 0 and item.spread_group in self.spread_groups:
            return False
        if not fits(item.need, self.free):
            return False
        for name, amount in item.need.items():
            self.free[name] = self.free.get(name, 0.0) - amount
        if item.spread_group >= 0:
            self.spread_groups.add(item.spread_group)
        return True


def fits(need: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(name, 0.0) >= amount - EPSILON for name, amount in need.items() if amount > 0)


def is_idle(load: NodeLoad) -> bool:
    """Ray's rule for a node the autoscaler may remove: nothing of it in use."""
    return load.actors == 0 and load.lent_cpus <= EPSILON and all(
        load.available.get(name, 0.0) >= amount - EPSILON for name, amount in load.total.items())


def _size(item: _Item) -> tuple[float, ...]:
    """Largest first: GPUs are the scarcest, then CPUs, then everything else."""
    need = item.need
    return (-need.get("GPU", 0.0), -need.get("CPU", 0.0), -sum(need.values()))


class Planner:
    """Keeps, between rounds, when each node was first seen idle. Its clock is injected."""

    def __init__(self, config: ClusterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._idle_since: dict[str, float] = {}
        self._types = {name: t.vector() for name, t in config.worker_types().items()}

    def plan(self, view: AutoscalerView, workers: Sequence[WorkerNode], ignore: Iterable[str] = ()) -> Plan:
        """`ignore`: nodes being stopped, which the hub may still list as alive."""
        now = self._clock()
        config = self.config
        managed = {w.node_id for w in workers}
        skipped = set(ignore) | managed
        others = [n for n in view.nodes if n.node_id not in skipped]  # the head, nodes joined by hand
        counts = Counter(w.node_type for w in workers)
        launch: Counter[str] = Counter()
        starting = sum(1 for w in workers if w.load is None)
        rate = max(MIN_CONCURRENT_LAUNCHES, int(config.upscaling_speed * max(1, len(view.nodes))))

        def can_add(node_type: str) -> bool:
            return (counts[node_type] + launch[node_type] < config.max_of(node_type)
                    and sum(counts.values()) + sum(launch.values()) < config.max_workers
                    and starting + sum(launch.values()) < rate)

        for name, node_type in config.worker_types().items():
            while counts[name] + launch[name] < node_type.min_workers and can_add(name):
                launch[name] += 1

        # request_resources(): against totals.
        total_bins = [_Bin(n.node_id, "", dict(n.total)) for n in others]
        total_bins += [_Bin(w.node_id, w.node_type, dict(w.load.total if w.load else self._types[w.node_type]))
                       for w in workers]
        requested = [_Item(dict(d.resources)) for d in view.requested for _ in range(d.count)]
        infeasible, waiting, kept = self._place(requested, total_bins, launch, can_add, others)

        # Waiting demands: against what is available.
        bins = [_Bin(n.node_id, "", dict(n.available)) for n in others]
        bins += [_Bin(w.node_id, w.node_type, dict(w.load.available if w.load else self._types[w.node_type]))
                 for w in workers]
        bins += [_Bin("", name, dict(self._types[name])) for name, n in launch.items() for _ in range(n)]
        items = self._demand_items(view)
        more_infeasible, more_waiting, used = self._place(items, bins, launch, can_add, others)
        infeasible += more_infeasible
        waiting += more_waiting

        terminate = self._to_stop(workers, counts, kept | used, now)
        return Plan(dict(launch), terminate, _distinct(infeasible), _distinct(waiting))

    # -- packing ------------------------------------------------------------------------------------
    def _demand_items(self, view: AutoscalerView) -> list[_Item]:
        items = [_Item(dict(d.resources)) for d in (*view.task_demand, *view.actor_demand) for _ in range(d.count)]
        for index, group in enumerate(view.placement_groups):
            if group.strategy == "STRICT_PACK":
                total: Counter[str] = Counter()
                for bundle in group.bundles:
                    total.update(bundle)
                items.append(_Item(dict(total)))
            else:
                spread = index if group.strategy == "STRICT_SPREAD" else -1
                items += [_Item(dict(bundle), spread) for bundle in group.bundles]
        return items

    def _place(
        self, items: list[_Item], bins: list[_Bin], launch: Counter[str], can_add: Callable[[str], bool],
        others: Sequence[NodeLoad],
    ) -> tuple[list[dict[str, float]], list[dict[str, float]], set[str]]:
        """Pack `items` into `bins`, launching nodes (added to `launch` and `bins`) for the rest.
        Returns (infeasible, waiting for max_workers, ids of existing nodes that took items)."""
        infeasible: list[dict[str, float]] = []
        left: list[_Item] = []
        used: set[str] = set()
        for item in sorted(items, key=_size):
            if not self._feasible(item, others):
                infeasible.append(item.need)
                continue
            target = next((b for b in bins if b.take(item)), None)
            if target is None:
                left.append(item)
            elif target.node_id:
                used.add(target.node_id)
        while left:
            choice = self._best_type(left, can_add)
            if choice is None:
                break
            launch[choice] += 1
            fresh = _Bin("", choice, dict(self._types[choice]))
            bins.append(fresh)
            left = [item for item in left if not fresh.take(item)]  # takes what the trial took
        return infeasible, [item.need for item in left], used

    def _feasible(self, item: _Item, others: Sequence[NodeLoad]) -> bool:
        return any(fits(item.need, vector) for vector in self._types.values()) or any(
            fits(item.need, node.total) for node in others)

    def _best_type(self, items: Sequence[_Item], can_add: Callable[[str], bool]) -> str | None:
        """The type one more node of which takes the most of `items`, then is fullest; None if no
        type may be added or none takes anything."""
        best: tuple[bool, int, float, str] | None = None
        for name, vector in sorted(self._types.items()):
            if not can_add(name):
                continue
            trial = _Bin("", name, dict(vector))
            taken = sum(1 for item in items if trial.take(item))
            if not taken:
                continue
            used = [1.0 - trial.free.get(r, 0.0) / amount for r, amount in vector.items() if amount > 0]
            fullness = sum(used) / len(used) if used else 0.0
            # As Ray: GPU nodes are kept for work that needs GPUs.
            gpu_ok = not vector.get("GPU") or trial.free.get("GPU", 0.0) < vector["GPU"] - EPSILON
            score = (gpu_ok, taken, fullness, name)
            if best is None or score[:3] > best[:3]:
                best = score
        return best[3] if best is not None else None

    # -- stopping -----------------------------------------------------------------------------------
    def _to_stop(
        self, workers: Sequence[WorkerNode], counts: Counter[str], keep: set[str], now: float,
    ) -> list[tuple[str, str]]:
        stop: list[tuple[str, str]] = []
        remaining = Counter(counts)
        timeout = self.config.idle_timeout_s
        for worker in workers:
            load = worker.load
            if load is None:
                self._idle_since.pop(worker.node_id, None)
                if now - worker.launched_at > REGISTER_TIMEOUT_S:
                    stop.append((worker.node_id, f"the hub has not listed it for {REGISTER_TIMEOUT_S:g} s"))
                    remaining[worker.node_type] -= 1
                continue
            if not is_idle(load) or worker.holds_objects:
                self._idle_since.pop(worker.node_id, None)
                continue
            since = self._idle_since.setdefault(worker.node_id, now)
            minimum = self.config.available_node_types[worker.node_type].min_workers
            if worker.node_id in keep or now - since < timeout or remaining[worker.node_type] <= minimum:
                continue
            stop.append((worker.node_id, f"idle for {now - since:.1f} s (idle_timeout_minutes="
                                         f"{self.config.idle_timeout_minutes:g})"))
            remaining[worker.node_type] -= 1
        known = {w.node_id for w in workers}
        for node_id in [n for n in self._idle_since if n not in known]:
            del self._idle_since[node_id]
        return stop


def _distinct(shapes: Iterable[dict[str, float]]) -> list[dict[str, float]]:
    seen: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
    for shape in shapes:
        seen.setdefault(tuple(sorted(shape.items())), shape)
    return list(seen.values())
