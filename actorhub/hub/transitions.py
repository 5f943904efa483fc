"""The lock-held half of the actor table: its state and the transitions between states.

`ActorTable` (in `_actor_table`) takes the lock and calls these; every method here assumes it
is held, and appends what the service must do to the `Decisions` it is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from actorhub._proto.v1 import common_pb2
from actorhub.hub.placement_policy import PlacementPolicy, could_fit
from actorhub.hub.records import (
    ALIVE,
    DEAD,
    PENDING,
    RESTARTING,
    ActorRecord,
    Decisions,
    JobRecord,
    NodeRecord,
    Placement,
    UnknownActor,
    WorkerKill,
    died,
    out_of_restarts,
)
from actorhub.hub.resources import describe, fits, give_back, take
from actorhub.namespaces.directory import NameDirectory
from actorhub.wire.errors import ErrorKind, system_error_info

# Float CPU counts are added and subtracted many times; compare with a little slack.
_EPSILON = 1e-9


def _missing(need: dict[str, float], nodes: dict[str, NodeRecord]) -> str:
    """The resources of `need` that no single alive node has enough of, as people write them."""
    alive = [n for n in nodes.values() if n.alive]
    short = {k: v for k, v in need.items() if not any(n.resources.get(k, 0.0) >= v - _EPSILON for n in alive)}
    return describe(0.0, short or need)


def _cpus(count: float) -> str:
    """A CPU count as people write it: 2.0, 0.5, 1.25."""
    return f"{count:.1f}" if round(count, 1) == count else f"{count:g}"


class TableState:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        placement_timeout_s: float = 30.0,
        avoid_node_s: float = 1.0,
        poll_s: float = 1.0,
        max_dead_actors: int = 1000,
    ) -> None:
        if max_dead_actors < 0:
            raise ValueError(f"max_dead_actors must be >= 0, got {max_dead_actors}")
        self._clock = clock
        self._max_dead_actors = max_dead_actors
        self._placement_timeout_s = placement_timeout_s
        self._avoid_node_s = avoid_node_s
        self._poll_s = poll_s
        self._lock = threading.Lock()
        # actor_id -> {watch key: wake}: one-shot callbacks for the next change of that actor's
        # record (or the hub's shutdown). Called under the lock: they must only hand the news
        # over (set an event, schedule a callback on a loop), never block or call the table.
        self._watchers: dict[str, dict[int, Callable[[], None]]] = {}
        self._watch_counter = 0
        self._actors: dict[str, ActorRecord] = {}
        # DEAD actors still in `_actors`, oldest first: only the newest `_max_dead_actors` stay.
        self._dead: dict[str, None] = {}
        self._names = NameDirectory()
        # Lifetime indexes, non-detached actors only: who dies with whom.
        self._children: dict[str, set[str]] = {}
        self._job_roots: dict[str, set[str]] = {}
        # Ordered set of actors waiting for a node that fits.
        self._pending: dict[str, None] = {}
        self._placement = PlacementPolicy()
        self._nodes: dict[str, NodeRecord] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._job_counter = 0
        self._node_counter = 0
        self._shutting_down = False
        self._dirty_actors: dict[str, ActorRecord] = {}
        self._dirty_jobs: dict[str, JobRecord] = {}
        self._dirty_nodes: dict[str, NodeRecord] = {}
        self._forgotten: list[str] = []
        self._counters_dirty = False

    def _get(self, actor_id: str) -> ActorRecord:
        rec = self._actors.get(actor_id)
        if rec is None:
            raise UnknownActor(f"no actor with id {actor_id}")
        return rec

    def _current(self, placement: Placement) -> ActorRecord | None:
        rec = self._actors.get(placement.actor_id)
        if (rec is None or rec.state == DEAD or not rec.placing
                or rec.incarnation != placement.incarnation or rec.node_id != placement.node_id):
            return None
        return rec

    def _touch(self, rec: ActorRecord) -> None:
        rec.version += 1
        self._dirty_actors[rec.actor_id] = rec
        self._wake(rec.actor_id)

    def _wake(self, actor_id: str) -> None:
        woken = self._watchers.pop(actor_id, None)
        if woken:
            for wake in woken.values():
                wake()

    def _wake_all(self) -> None:
        watchers, self._watchers = self._watchers, {}
        for woken in watchers.values():
            for wake in woken.values():
                wake()

    def _worker_kill(self, rec: ActorRecord) -> WorkerKill:
        node = self._nodes.get(rec.node_id)
        return WorkerKill(rec.actor_id, rec.incarnation, rec.node_id, node.address if node else "")

    def _kill_locked(self, rec: ActorRecord, message: str, out: Decisions) -> WorkerKill | None:
        """kill(no_restart=True): the worker to kill when one runs, else the actor dies now."""
        if rec.state == DEAD:
            return None
        rec.kill_requested = True
        if not rec.kill_message:
            rec.kill_message = message
        self._touch(rec)  # persisted: a hub restarted mid-kill must not restart the actor
        if rec.state == ALIVE:
            return self._worker_kill(rec)
        # No process yet; a StartActor in flight finds the record DEAD and kills what it made.
        self._mark_dead(rec, system_error_info(rec.kill_message, ErrorKind.ACTOR_DIED), out)
        return None

    def _kill_by_owner(self, rec: ActorRecord, message: str, out: Decisions) -> None:
        if rec.state == DEAD or rec.spec.detached:
            return
        already = rec.kill_requested and rec.state == ALIVE
        kill = self._kill_locked(rec, message, out)
        if kill is not None and not already:
            out.kills.append(kill)

    def _exited_locked(self, rec: ActorRecord, cause: str, out: Decisions) -> None:
        self._release(rec)
        rec.address = ""
        rec.worker_id = ""
        rec.placing = False
        rec.early_exit = ""
        hard_pin = rec.spec.node_id and not rec.spec.node_affinity_soft
        pinned_to = self._nodes.get(rec.spec.node_id) if hard_pin else None
        if rec.kill_requested:
            self._mark_dead(rec, system_error_info(rec.kill_message, ErrorKind.ACTOR_DIED), out)
        elif pinned_to is not None and not pinned_to.alive:
            # Its node affinity names a node that is gone: no restart could ever be placed.
            self._mark_dead(rec, died(rec, f"{cause}, and it is pinned to that node"), out)
        elif rec.spec.max_restarts == -1 or self._restart_allowed(rec):
            rec.num_restarts += 1
            self._restart_elsewhere(rec, out)
        else:
            self._mark_dead(rec, out_of_restarts(rec, cause), out)

    def _restart_allowed(self, rec: ActorRecord) -> bool:
        """Within its budget: max_restarts for its life, or, with restart_window_s, in the last
        window (the restart it allows is counted in it)."""
        window = rec.spec.restart_window_s
        if window <= 0:
            return rec.num_restarts < rec.spec.max_restarts
        now = self._clock()
        times = rec.restart_times
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= rec.spec.max_restarts:
            return False
        times.append(now)
        return True

    def _mark_dead(self, rec: ActorRecord, cause: common_pb2.ErrorInfo, out: Decisions) -> None:
        self._release(rec)
        rec.state = DEAD
        rec.death_cause = cause
        rec.placing = False
        rec.address = ""
        rec.pending_reason, rec.infeasible = "", False
        self._pending.pop(rec.actor_id, None)
        spec = rec.spec
        if spec.name:
            self._names.release(spec.namespace, spec.name, rec.actor_id)
        if not spec.detached:
            siblings = (self._children.get(spec.owner_actor_id) if spec.owner_actor_id
                        else self._job_roots.get(spec.owner_job_id))
            if siblings is not None:
                siblings.discard(rec.actor_id)
                if not siblings:
                    owner_key = spec.owner_actor_id or spec.owner_job_id
                    index = self._children if spec.owner_actor_id else self._job_roots
                    index.pop(owner_key, None)
        # The class and the constructor's arguments only served to (re)start it. A new message,
        # not an edit: a Placement handed out earlier may still be serializing the old one.
        if spec.pickled_class or spec.init_args:
            slim = common_pb2.ActorSpec()
            slim.CopyFrom(spec)
            slim.ClearField("pickled_class")
            slim.ClearField("init_args")
            rec.spec = slim
            rec.spec_dirty = True
        self._touch(rec)
        self._remember_dead(rec)
        for child_id in sorted(self._children.pop(rec.actor_id, ())):
            child = self._actors.get(child_id)
            if child is not None:
                message = f"The actor {child.label} died: its owner actor {rec.actor_id} died"
                self._kill_by_owner(child, message, out)

    def _remember_dead(self, rec: ActorRecord) -> None:
        """Keep the newest `_max_dead_actors` dead actors; older ids answer as unknown actors."""
        self._dead[rec.actor_id] = None
        while len(self._dead) > self._max_dead_actors:
            oldest = next(iter(self._dead))
            del self._dead[oldest]
            self._actors.pop(oldest, None)
            self._dirty_actors.pop(oldest, None)
            self._forgotten.append(oldest)

    def _release(self, rec: ActorRecord) -> None:
        if not rec.reserved_on:
            return
        node = self._nodes.get(rec.reserved_on)
        if node is not None:
            node.available_cpus += rec.reserved_cpus
            node.actors -= 1
            if rec.reserved_resources:
                # Only names the node still has: a removed placement group's bundle names are gone.
                give_back(node.available, {k: v for k, v in rec.reserved_resources.items() if k in node.resources})
                node.gpus.release(rec.gpu_ids, rec.reserved_resources.get("GPU", 0.0))
        rec.reserved_on = ""
        rec.reserved_cpus = 0.0
        rec.reserved_resources = {}
        rec.gpu_ids = []

    def _schedule_pending_locked(self, out: Decisions) -> None:
        if self._shutting_down:
            return
        for actor_id in list(self._pending):
            rec = self._actors[actor_id]
            if rec.state in (PENDING, RESTARTING) and not rec.placing:
                self._try_place(rec, out)
            else:
                del self._pending[actor_id]

    def _restart_elsewhere(self, rec: ActorRecord, out: Decisions) -> None:
        """A new incarnation of `rec`, placed afresh (a crash's restart, a drain's move)."""
        rec.state = RESTARTING
        rec.incarnation += 1
        rec.node_id = ""
        rec.pid = 0
        rec.avoid.clear()
        rec.first_failure = None
        self._touch(rec)
        self._try_place(rec, out)

    def _try_place(self, rec: ActorRecord, out: Decisions) -> None:
        node, retry_in = self._choose_node(rec)
        if node is None and rec.spec.node_id and not self._shutting_down:
            why = self._placement.unschedulable(rec.spec, self._nodes, fits_now=retry_in is not None)
            if why and rec.state == RESTARTING:
                # It ran: its callers see it died (as when its node dies under it), not unschedulable.
                self._mark_dead(rec, died(rec, f"it cannot be restarted: {why}"), out)
                return
            if why:
                self._mark_dead(rec, system_error_info(
                    f"The actor {rec.label} cannot be scheduled: {why}", ErrorKind.ACTOR_UNSCHEDULABLE), out)
                return
        if node is None or self._shutting_down:
            self._pending[rec.actor_id] = None
            waits_for = self._choose_node(rec, count_lent=False)[0] if rec.spec.num_cpus > 0 else None
            rec.waiting_on = waits_for.node_id if waits_for is not None else ""
            rec.pending_reason, rec.infeasible = self._why_pending(rec, retry_in)
            if retry_in is not None:
                out.merge(Decisions(retry_after=retry_in))
            return
        self._pending.pop(rec.actor_id, None)
        rec.waiting_on = ""
        rec.pending_reason, rec.infeasible = "", False
        cpus = rec.spec.num_cpus
        node.available_cpus -= cpus
        node.actors += 1
        rec.reserved_on = node.node_id
        rec.reserved_cpus = cpus
        if rec.spec.resources:
            need = dict(rec.spec.resources)
            take(node.available, need)
            rec.reserved_resources = need
            # `_choose_node` saw the GPUs free, so the slots have them.
            rec.gpu_ids = node.gpus.assign(need.get("GPU", 0.0)) or []
        rec.node_id = node.node_id
        rec.placing = True
        self._placement.placed(rec.spec, node)
        self._touch(rec)
        out.placements.append(Placement(rec.actor_id, rec.incarnation, rec.spec, node.node_id, node.address,
                                        tuple(rec.gpu_ids)))

    def _why_pending(self, rec: ActorRecord, retry_in: float | None) -> tuple[str, bool]:
        """(reason, infeasible) for an actor `_try_place` could not place, as the cluster is now.

        Infeasible: no alive node (its own node, when it is pinned to one) has as many CPUs in
        all as it asks for, so only a node joining could ever take it. Otherwise it waits for
        resources: actors hold the CPUs, tasks were lent them, or a node that fits it failed to
        start it a moment ago."""
        if self._shutting_down:
            return "the hub is shutting down", False
        need = max(rec.spec.num_cpus, rec.spec.placement_cpus)
        others = dict(rec.spec.resources)
        demand = describe(need, others) if others else f"{{CPU: {need:g}}}"
        pinned = rec.spec.node_id
        target = self._nodes.get(pinned) if pinned else None
        if pinned and rec.spec.node_affinity_soft and not (target is not None and target.alive
                                                            and could_fit(rec.spec, target)):
            pinned = ""  # a soft affinity to a node that cannot take it: placed as DEFAULT
        if pinned:
            node = self._nodes.get(pinned)
            if node is None or not node.alive:
                return f"infeasible: it is pinned to node {pinned}, which is not alive", True
            if node.num_cpus < need - _EPSILON:
                return (f"infeasible: requires {demand} on node {pinned}, which has only "
                        f"{_cpus(node.num_cpus)} CPUs"), True
            if not fits(others, node.resources):
                return (f"infeasible: requires {demand} on node {pinned}, which has only "
                        f"{describe(node.num_cpus, node.resources)}"), True
            candidates = [node]
        else:
            candidates = [n for n in self._nodes.values() if n.alive]
            if not candidates:
                return f"waiting for resources: requires {demand} and no node is alive", False
            largest = max(n.num_cpus for n in candidates)
            if largest < need - _EPSILON:
                return (f"infeasible: requires {demand} but no node has that many "
                        f"(largest: {_cpus(largest)} CPUs)"), True
            candidates = [n for n in candidates if fits(others, n.resources)]
            if not candidates:
                return f"infeasible: requires {demand} but no alive node has {_missing(others, self._nodes)}", True
        if retry_in is not None:
            return (f"waiting for resources: requires {demand}; starting it failed on a node that has "
                    f"them, tried again in {retry_in:.1f} s"), False
        if rec.waiting_on:
            return (f"waiting for resources: requires {demand}; node {rec.waiting_on} has them once its "
                    "tasks give back the CPUs lent to them"), False
        fitting = [n for n in candidates if n.num_cpus >= need - _EPSILON]
        if not fitting:
            return (f"infeasible: requires {demand} but no node has all of it "
                    "(those with enough CPUs lack the rest)"), True
        if others and all(n.available_cpus - n.lent_cpus >= need - _EPSILON for n in fitting):
            return (f"waiting for resources: requires {demand} but actors or tasks hold them on every node that has "
                    "them", False)
        best = max(fitting, key=lambda n: (n.available_cpus - n.lent_cpus, -n.order))
        free = max(0.0, best.available_cpus - best.lent_cpus)
        return (f"waiting for resources: requires {demand} but all nodes that fit it have their CPUs "
                f"claimed by actors or tasks (most available: {_cpus(free)} of {_cpus(best.num_cpus)} "
                f"CPUs on node {best.node_id})"), False

    def _choose_node(self, rec: ActorRecord, count_lent: bool = True) -> tuple[NodeRecord | None, float | None]:
        """The node its scheduling strategy picks among those it fits on now (hub/placement_policy.py),
        or (None, seconds until an avoided node may fit).

        `count_lent=False`: fits once its tasks give back the CPUs its desk lent them."""
        now = self._clock()
        candidates: list[NodeRecord] = []
        retry_in: float | None = None
        need = self._placement_need(rec.spec)
        for node in self._nodes.values():
            free = node.available_cpus - (node.lent_cpus if count_lent and rec.spec.num_cpus > 0 else 0.0)
            if (not node.alive or node.draining or free < rec.spec.num_cpus - _EPSILON
                    or node.num_cpus < rec.spec.placement_cpus):
                continue
            if need and not (fits(need, node.available) and node.gpus.can_assign(need.get("GPU", 0.0))):
                continue
            until = rec.avoid.get(node.node_id)
            if until is not None and until > now:
                retry_in = until - now if retry_in is None else min(retry_in, until - now)
                continue
            candidates.append(node)
        best = self._placement.choose(rec.spec, candidates, self._nodes)
        return best, (None if best is not None else retry_in)

    def _placement_need(self, spec: common_pb2.ActorSpec) -> Mapping[str, float]:
        """What must be free on a node, besides CPUs, to place the actor there: what it holds."""
        return spec.resources

    def _node_died_locked(self, node: NodeRecord, out: Decisions) -> None:
        node.alive = False
        self._dirty_nodes[node.node_id] = node
        cause = f"its node {node.node_id} died"
        for rec in list(self._actors.values()):
            if rec.state != DEAD and rec.node_id == node.node_id and (rec.state == ALIVE or rec.placing):
                self._exited_locked(rec, cause, out)

    def _link_owner(self, rec: ActorRecord) -> str:
        """Index the actor under its owner; the death message when the owner is already gone."""
        spec = rec.spec
        if spec.detached:
            return ""
        if spec.owner_actor_id:
            self._children.setdefault(spec.owner_actor_id, set()).add(spec.actor_id)
            owner = self._actors.get(spec.owner_actor_id)
            if owner is not None and owner.state == DEAD:
                return f"The actor {rec.label} died: its owner actor {spec.owner_actor_id} died"
            return ""
        if spec.owner_job_id:
            self._job_roots.setdefault(spec.owner_job_id, set()).add(spec.actor_id)
            job = self._jobs.get(spec.owner_job_id)
            if job is not None and not job.alive:
                return f"The actor {rec.label} died: its owner job {spec.owner_job_id} ended"
        return ""
