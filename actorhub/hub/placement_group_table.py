"""The placement groups of the hub's table: create, reserve, reschedule, remove.

A layer of the actor table (between `transitions.TableState` and `recovery.RecoverableState`),
under the same lock, because bundles and actors draw on the same nodes: a bundle's CPUs leave
`NodeRecord.available_cpus` (so neither actors outside the group nor the node's lease desk,
which learns the reserved count from ReportLentCpus, can use them), its other resources leave
`available`, and its bundle names (`hub/bundles.py`) join the node's vector, where an actor
rewritten into them is placed like any other.

Hooks into the table's transitions: a node's death sends its bundles back to placement (the
group is RESCHEDULING until they fit elsewhere); a node registering again gets its bundles
reserved on its new record; every scheduling pass places pending groups before pending actors;
a group's creator (job, or actor) ending removes it unless it is detached. Removal kills the
group's actors and frees its bundles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.hub.bundle_gpus import BundleGpus, bundle_gpu_request
from actorhub.hub.bundles import STRATEGIES, bundle_resources, check_bundles, group_of, group_request
from actorhub.hub.control_store import GroupRow
from actorhub.hub.placement_groups import (
    CREATED,
    REMOVED,
    RESCHEDULING,
    GroupRecord,
    NodeRoom,
    describe_bundles,
    group_info,
    plan,
)
from actorhub.hub.records import ALIVE, DEAD, ActorRecord, Decisions, InvalidSpec, NameTaken, NodeRecord, UnknownActor
from actorhub.hub.resources import EPSILON, give_back, take
from actorhub.hub.task_loans import LoanAnswer, grant_claim
from actorhub.hub.transitions import TableState

__all__ = ["GroupTable", "UnknownGroup"]

# Removed groups answer placement_group_table() for a while, as Ray's table shows them.
_MAX_REMOVED_GROUPS = 1000


class UnknownGroup(UnknownActor):
    """No placement group with that id (or name); NOT_FOUND on the wire."""


class GroupTable(TableState):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._groups: dict[str, GroupRecord] = {}
        self._group_names: dict[tuple[str, str], str] = {}
        # Groups with bundles to place, in arrival order; removed ones, oldest first.
        self._pending_groups: dict[str, None] = {}
        self._removed_groups: dict[str, None] = {}
        self._group_watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._dirty_groups: dict[str, GroupRecord] = {}
        self._forgotten_groups: list[str] = []
        # Which GPUs of each reserved bundle its actors and tasks hold (hub/bundle_gpus.py).
        self._bundle_gpus = BundleGpus()
        # Creator actor id -> its non-detached groups, which end with it: an actor's death looks
        # here, not through every group.
        self._groups_of_actor: dict[str, set[str]] = {}
        # Group id -> the actors placed in it that are not dead, so a removal finds them without
        # looking through every actor; a restored table (whose actors were not placed by it)
        # looks through them all.
        self._actors_of_group: dict[str, set[str]] = {}
        self._restored_actors = False

    # ---- the public operations (each takes the lock) ------------------------------------

    def create_group(self, spec: hub_pb2.PlacementGroupSpec) -> tuple[hub_pb2.PlacementGroupInfo, Decisions]:
        """Record the group and reserve its bundles when they all fit now. Idempotent by id."""
        _check_spec(spec)
        out = Decisions()
        with self._lock:
            existing = self._groups.get(spec.placement_group_id)
            if existing is not None:
                return group_info(existing), out
            if spec.name:
                holder = self._group_names.get((spec.namespace, spec.name))
                if holder is not None:
                    raise NameTaken(f"a placement group named '{spec.name}' already exists in namespace "
                                    f"'{spec.namespace}'")
                self._group_names[(spec.namespace, spec.name)] = spec.placement_group_id
            own = hub_pb2.PlacementGroupSpec()
            own.CopyFrom(spec)
            g = self._groups[own.placement_group_id] = GroupRecord(spec=own)
            self._index_creator(g)
            self._pending_groups[g.group_id] = None
            self._schedule_pending_locked(out)
            self._touch_group(g)
            return group_info(g), out

    def remove_group(self, group_id: str) -> Decisions:
        out = Decisions()
        with self._lock:
            g = self._groups.get(group_id)
            if g is None:
                raise UnknownGroup(f"no placement group with id {group_id}")
            self._remove_group_locked(g, out)
            self._schedule_pending_locked(out)
        return out

    def watch_group(
        self, group_id: str, wake: Callable[[], None]
    ) -> tuple[hub_pb2.PlacementGroupInfo, int | None]:
        """(info, None) once the group is CREATED or REMOVED; else (info, key): `wake()` is called
        under the lock at the group's next change. Drop the key with `unwatch_group`."""
        with self._lock:
            g = self._groups.get(group_id)
            if g is None:
                raise UnknownGroup(f"no placement group with id {group_id}")
            if g.state in (CREATED, REMOVED) or self._shutting_down:
                return group_info(g), None
            self._watch_counter += 1
            self._group_watchers.setdefault(group_id, {})[self._watch_counter] = wake
            return group_info(g), self._watch_counter

    def unwatch_group(self, group_id: str, key: int) -> None:
        with self._lock:
            waiting = self._group_watchers.get(group_id)
            if waiting is not None:
                waiting.pop(key, None)
                if not waiting:
                    del self._group_watchers[group_id]

    def find_group(self, group_id: str, name: str = "", namespace: str = "") -> hub_pb2.PlacementGroupInfo:
        with self._lock:
            if not group_id:
                group_id = self._group_names.get((namespace, name), "")
                if not group_id:
                    raise UnknownGroup(f"no placement group named '{name}' in namespace '{namespace}'")
            g = self._groups.get(group_id)
            if g is None:
                raise UnknownGroup(f"no placement group with id {group_id}")
            return group_info(g)

    def list_groups(self, include_removed: bool = True) -> list[hub_pb2.PlacementGroupInfo]:
        with self._lock:
            return [group_info(g) for g in self._groups.values() if include_removed or g.state != REMOVED]

    # ---- hooks into the table's transitions (lock held) ---------------------------------

    def _schedule_pending_locked(self, out: Decisions) -> None:
        if not self._shutting_down:
            for group_id in list(self._pending_groups):
                self._place_group(self._groups[group_id])
        super()._schedule_pending_locked(out)

    def _node_died_locked(self, node: NodeRecord, out: Decisions) -> None:
        super()._node_died_locked(node, out)
        for g in self._groups.values():
            if g.state == REMOVED or node.node_id not in g.nodes:
                continue
            for i, node_id in enumerate(g.nodes):
                if node_id == node.node_id:
                    g.nodes[i] = ""
                    g.gpu_ids[i] = []
                    self._bundle_gpus.drop((g.group_id, i))
            g.state = RESCHEDULING
            g.pending_reason = f"rescheduling the bundles that were on node {node.node_id}, which died"
            self._pending_groups[g.group_id] = None
            self._touch_group(g)

    def _mark_dead(self, rec: ActorRecord, cause: common_pb2.ErrorInfo, out: Decisions) -> None:
        super()._mark_dead(rec, cause, out)
        members = self._actors_of_group.get(rec.spec.placement_group_id) if rec.spec.placement_group_id else None
        if members is not None:
            members.discard(rec.actor_id)
        for group_id in sorted(self._groups_of_actor.pop(rec.actor_id, ())):
            g = self._groups.get(group_id)
            if g is not None:
                self._remove_group_locked(g, out)

    def _why_pending(self, rec: ActorRecord, retry_in: float | None) -> tuple[str, bool]:
        """An actor of a group that is not (fully) reserved waits for the group, not for a node
        with its bundle names: say so, and infeasible only when the group is."""
        g = self._groups.get(rec.spec.placement_group_id) if rec.spec.placement_group_id else None
        if g is not None and g.state == CREATED and rec.spec.placement_cpus > 0:
            index = rec.spec.placement_group_bundle_index
            bundles = [g.bundle(i) for i in range(len(g.nodes)) if index < 0 or i == index]
            if all(b.get("CPU", 0.0) < rec.spec.placement_cpus - EPSILON for b in bundles):
                where = f"bundle {index}" if index >= 0 else "any bundle"
                return (f"infeasible: an actor that asks for no resources needs {rec.spec.placement_cpus:g} CPU "
                        f"to be placed (as in Ray), which {where} of its placement group {g.group_id} lacks"), True
        if g is None or g.state == CREATED:
            return super()._why_pending(rec, retry_in)
        if g.state == REMOVED:
            return f"infeasible: its placement group {g.group_id} was removed", True
        return f"waiting for its placement group {g.group_id} ({g.state}: {g.pending_reason})", g.infeasible

    def _try_place(self, rec: ActorRecord, out: Decisions) -> None:
        """As the table places any actor; one placed in a bundle with GPUs also gets GPU ids, out
        of the ones the bundle holds (its worker's CUDA_VISIBLE_DEVICES)."""
        super()._try_place(rec, out)
        spec = rec.spec
        if spec.placement_group_id:
            self._actors_of_group.setdefault(spec.placement_group_id, set()).add(rec.actor_id)
        amount = bundle_gpu_request(spec.placement_group_id, spec.resources) if spec.placement_group_id else 0.0
        if amount <= 0 or not rec.placing or rec.gpu_ids:
            return
        g = self._groups.get(spec.placement_group_id)
        if g is None:
            return
        index = spec.placement_group_bundle_index
        candidates = [index] if index >= 0 else [i for i, n in enumerate(g.nodes) if n == rec.reserved_on]
        for i in candidates:
            ids = self._bundle_gpus.assign_actor(rec.actor_id, (g.group_id, i), amount)
            if ids is not None:
                rec.gpu_ids = ids
                for n, placement in enumerate(out.placements):
                    if placement.actor_id == rec.actor_id and placement.incarnation == rec.incarnation:
                        out.placements[n] = replace(placement, gpu_ids=tuple(rec.gpu_ids))
                return

    def _release(self, rec: ActorRecord) -> None:
        if self._bundle_gpus.release_actor(rec.actor_id, rec.gpu_ids):
            rec.gpu_ids = []  # the bundle's, not the node's: nothing goes back to the node's slots
        super()._release(rec)

    def _reserve_bundles_on(self, node: NodeRecord) -> None:
        """A node's record was made anew (it registered again): its bundles hold there again."""
        for g in self._groups.values():
            if g.state == REMOVED:
                continue
            for i, node_id in enumerate(g.nodes):
                if node_id == node.node_id:
                    self._take_bundle(node, g, i)

    def _hold_bundle_gpus(self, node: NodeRecord, held: Sequence[ActorRecord]) -> None:
        """After `_reserve_bundles_on`: the node's actors in bundles with GPUs hold them again, the
        ids the node reported first (a restarted hub knows them only from there); an actor whose
        start is still under way is given ids anew."""
        holders = []
        for rec in held:
            group_id = rec.spec.placement_group_id
            amount = bundle_gpu_request(group_id, rec.spec.resources) if group_id else 0.0
            g = self._groups.get(group_id) if amount > 0 else None
            if g is not None and g.state != REMOVED:
                index = rec.spec.placement_group_bundle_index
                here = [i for i, n in enumerate(g.nodes) if n == node.node_id and (index < 0 or i == index)]
                holders.append((not rec.gpu_ids, rec, here, amount))
        for _, rec, here, amount in sorted(holders, key=lambda h: h[0]):  # reported ids first
            group_id = rec.spec.placement_group_id
            found = self._bundle_gpus.bundle_of(group_id, here, rec.gpu_ids) if rec.gpu_ids else None
            if found is not None:
                self._bundle_gpus.hold_actor(rec.actor_id, (group_id, found), rec.gpu_ids, amount)
                continue
            for i in here:
                ids = self._bundle_gpus.assign_actor(rec.actor_id, (group_id, i), amount)
                if ids is not None:
                    rec.gpu_ids = ids
                    break

    def _placement_need(self, spec: common_pb2.ActorSpec) -> Mapping[str, float]:
        """Ray's default actor (1 CPU to be placed, none held) in a group needs that CPU free in its
        bundle (or any bundle of the group on the node), not on the node."""
        if not spec.placement_group_id or spec.placement_cpus <= 0:
            return spec.resources
        cpus = group_request(spec.placement_group_id, spec.placement_group_bundle_index, spec.placement_cpus, {})
        return {**spec.resources, **{name: amount for name, amount in cpus.items() if name.startswith("CPU_")}}

    # ---- tasks' leases of bundle GPUs (hub/bundle_gpus.py; lock held) --------------------------

    def _grant_claim(self, node: NodeRecord, claim: Mapping[str, float]) -> LoanAnswer:
        """As `task_loans.grant_claim`; a claim of a bundle's GPUs gets ids out of the bundle's."""
        named = group_of(list(claim))
        amount = bundle_gpu_request(named[0], claim) if named is not None else 0.0
        g = self._groups.get(named[0]) if named is not None and amount > 0 else None
        pending = (self._actors[a] for a in self._pending)
        if named is None or amount <= 0:
            return grant_claim(node, claim, pending)
        here = [i for i, n in enumerate(g.nodes) if n == node.node_id] if g is not None else []
        key = next(((named[0], i) for i in here if (named[1] < 0 or i == named[1])
                    and self._bundle_gpus.can_assign((named[0], i), amount)), None)
        if key is None:
            return LoanAnswer()
        answer = grant_claim(node, claim, pending)
        if not answer.granted:
            return answer
        ids = self._bundle_gpus.grant_task(key, amount) or []
        for gpu in ids:
            loan = (key[0], key[1], gpu)
            node.lent_bundle_gpus[loan] = node.lent_bundle_gpus.get(loan, 0.0) + (amount if amount < 1 else 1.0)
        return LoanAnswer(True, tuple(ids), bundle_index=key[1])

    def _replace_bundle_loans(self, node: NodeRecord, loans: Iterable[hub_pb2.PlacementGroupGpuLoan]) -> None:
        """The desk lends exactly `loans` of bundles' GPUs now (absolute, as its other loans)."""
        now = {(loan.placement_group_id, loan.bundle_index, loan.gpu_id): loan.amount for loan in loans
               if loan.amount > 0}
        if now or node.lent_bundle_gpus:
            self._bundle_gpus.replace_task_loans(node.lent_bundle_gpus, now)
            node.lent_bundle_gpus = now

    def _remove_job_groups(self, job_id: str, out: Decisions) -> None:
        for g in list(self._groups.values()):
            spec = g.spec
            if spec.creator_job_id == job_id and not spec.detached and g.state != REMOVED:
                self._remove_group_locked(g, out)

    # ---- placing and removing (lock held) ------------------------------------------------

    def _place_group(self, g: GroupRecord) -> None:
        todo = g.unplaced()
        if not todo:
            self._pending_groups.pop(g.group_id, None)
            return
        bundles = [g.bundle(i) for i in range(len(g.nodes))]
        placed = {i: n for i, n in enumerate(g.nodes) if n}
        alive = [n for n in self._nodes.values() if n.alive and not n.draining]
        rooms = [NodeRoom(n.node_id, {**n.available, "CPU": n.available_cpus - n.lent_cpus}, n.load()) for n in alive]
        chosen = plan(g.spec.strategy, bundles, todo, placed, rooms)
        if chosen is None:
            totals = [NodeRoom(n.node_id, {**n.resources, "CPU": n.num_cpus}, n.load()) for n in alive]
            infeasible = plan(g.spec.strategy, bundles, todo, {}, totals) is None
            shown = describe_bundles([bundles[i] for i in todo])
            if infeasible:
                reason = (f"infeasible: no alive nodes can hold bundles {shown} under {g.spec.strategy} "
                          f"({len(alive)} alive nodes)")
            else:
                reason = (f"waiting for resources: bundles {shown} under {g.spec.strategy} fit the nodes "
                          "once actors, tasks or other groups give resources back")
            if (reason, infeasible) != (g.pending_reason, g.infeasible):
                g.pending_reason, g.infeasible = reason, infeasible
                self._touch_group(g)
            return
        for i, node_id in chosen.items():
            g.nodes[i] = node_id
            self._take_bundle(self._nodes[node_id], g, i)
        g.state = CREATED
        g.pending_reason, g.infeasible = "", False
        self._pending_groups.pop(g.group_id, None)
        self._touch_group(g)

    def _take_bundle(self, node: NodeRecord, g: GroupRecord, index: int) -> None:
        bundle = g.bundle(index)
        node.available_cpus -= bundle.get("CPU", 0.0)
        others = {k: v for k, v in bundle.items() if k != "CPU"}
        take(node.available, others)
        gpus = others.get("GPU", 0.0)
        known = g.gpu_ids[index]
        if gpus > 0 and len(known) == max(1, int(gpus)):
            # Held there before (a node registering again, a restarted hub: from the store): the
            # same ids, which its actors and tasks still use.
            node.gpus.claim(known, gpus)
        elif gpus > 0:
            g.gpu_ids[index] = node.gpus.assign(gpus) or []
            self._touch_group(g)  # the store keeps them
        self._bundle_gpus.reserve((g.group_id, index), g.gpu_ids[index])
        names = bundle_resources(g.group_id, index, bundle)
        give_back(node.resources, names)
        give_back(node.available, names)

    def _give_bundle(self, node: NodeRecord, g: GroupRecord, index: int) -> None:
        bundle = g.bundle(index)
        node.available_cpus += bundle.get("CPU", 0.0)
        others = {k: v for k, v in bundle.items() if k != "CPU"}
        give_back(node.available, others)
        node.gpus.release(g.gpu_ids[index], others.get("GPU", 0.0))
        g.gpu_ids[index] = []
        self._bundle_gpus.drop((g.group_id, index))
        names = bundle_resources(g.group_id, index, bundle)
        take(node.resources, names)
        for name in names:
            if node.resources.get(name, 0.0) <= EPSILON:
                # Gone from the node: an actor of the group releasing later gives nothing back.
                node.resources.pop(name, None)
                node.available.pop(name, None)
            elif name in node.available:
                node.available[name] -= names[name]

    def _remove_group_locked(self, g: GroupRecord, out: Decisions) -> None:
        if g.state == REMOVED:
            return
        for i, node_id in enumerate(g.nodes):
            node = self._nodes.get(node_id) if node_id else None
            if node is not None and node.alive:
                self._give_bundle(node, g, i)
        g.state = REMOVED
        g.pending_reason, g.infeasible = "", False
        siblings = self._groups_of_actor.get(g.spec.creator_actor_id)
        if siblings is not None:
            siblings.discard(g.group_id)
            if not siblings:
                del self._groups_of_actor[g.spec.creator_actor_id]
        for i in range(len(g.nodes)):
            self._bundle_gpus.drop((g.group_id, i))
        self._pending_groups.pop(g.group_id, None)
        spec = g.spec
        if spec.name and self._group_names.get((spec.namespace, spec.name)) == g.group_id:
            del self._group_names[(spec.namespace, spec.name)]
        self._touch_group(g)
        self._removed_groups[g.group_id] = None
        while len(self._removed_groups) > _MAX_REMOVED_GROUPS:
            oldest = next(iter(self._removed_groups))
            del self._removed_groups[oldest]
            self._groups.pop(oldest, None)
            self._dirty_groups.pop(oldest, None)
            self._forgotten_groups.append(oldest)
        message = f"its placement group {g.group_id} was removed"
        members = self._actors_of_group.pop(g.group_id, set())
        candidates = list(self._actors.values()) if self._restored_actors else [
            rec for rec in (self._actors.get(a) for a in sorted(members)) if rec is not None]
        for rec in candidates:
            if rec.spec.placement_group_id == g.group_id and rec.state != DEAD:
                already = rec.kill_requested and rec.state == ALIVE
                kill = self._kill_locked(rec, f"The actor {rec.label} died: {message}", out)
                if kill is not None and not already:
                    out.kills.append(kill)

    def _index_creator(self, g: GroupRecord) -> None:
        if g.spec.creator_actor_id and not g.spec.detached and g.state != REMOVED:
            self._groups_of_actor.setdefault(g.spec.creator_actor_id, set()).add(g.group_id)

    def _touch_group(self, g: GroupRecord) -> None:
        g.version += 1
        self._dirty_groups[g.group_id] = g
        woken = self._group_watchers.pop(g.group_id, None)
        for wake in (woken or {}).values():
            wake()

    # ---- persistence ----------------------------------------------------------------------

    def _take_dirty_groups(self) -> tuple[list[GroupRow], list[str]]:
        groups, self._dirty_groups = self._dirty_groups, {}
        forgotten, self._forgotten_groups = self._forgotten_groups, []
        return [GroupRow(g.group_id, g.spec.SerializeToString(), g.state, tuple(g.nodes), g.version,
                         tuple(tuple(ids) for ids in g.gpu_ids)) for g in groups.values()], forgotten

    def _restore_groups(self, rows: Sequence[GroupRow]) -> None:
        """From the store: bundles on nodes still alive hold their CPUs there until the node
        registers again (which reserves them anew); the others are placed again."""
        self._restored_actors = bool(rows)  # actors of a group not in the store are dead already
        for row in rows:
            spec = hub_pb2.PlacementGroupSpec.FromString(row.spec)
            g = self._groups[row.group_id] = GroupRecord(spec=spec, state=row.state, nodes=list(row.nodes),
                                                          gpu_ids=[list(ids) for ids in row.gpu_ids],
                                                          version=row.version)
            if g.state == REMOVED:
                self._removed_groups[g.group_id] = None
                g.nodes = [""] * len(g.nodes)
                continue
            if spec.name:
                self._group_names[(spec.namespace, spec.name)] = g.group_id
            self._index_creator(g)
            for i, node_id in enumerate(g.nodes):
                node = self._nodes.get(node_id) if node_id else None
                if node is None or not node.alive:
                    g.nodes[i] = ""
                    g.gpu_ids[i] = []
                else:
                    node.available_cpus -= g.bundle(i).get("CPU", 0.0)
            if g.unplaced():
                if g.state == CREATED:
                    g.state = RESCHEDULING
                self._pending_groups[g.group_id] = None


def _check_spec(spec: hub_pb2.PlacementGroupSpec) -> None:
    if len(spec.placement_group_id) != 36:
        raise InvalidSpec(f"a placement group id is 36 hex digits, got {spec.placement_group_id!r}")
    if spec.strategy not in STRATEGIES:
        raise InvalidSpec(f"unknown placement strategy {spec.strategy!r}; use one of {', '.join(STRATEGIES)}")
    try:
        check_bundles([dict(b.resources) for b in spec.bundles])
    except ValueError as e:
        raise InvalidSpec(str(e)) from None
