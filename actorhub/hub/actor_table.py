"""The hub's state machine: actors, the name directory, jobs and nodes, under one lock.

Nothing here talks to the network. Each operation changes the tables and returns the
`Decisions` (start this actor there, kill that worker, shut the cluster down) that the service
layer then carries out outside the lock, feeding the outcome back in (`start_finished`,
`worker_exited`, ...). Every outcome carries the incarnation it is about, so a late answer for
a process the table has already given up on is recognised as stale instead of corrupting the
current record.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from actorhub._proto.v1 import common_pb2, hub_pb2, node_pb2
from actorhub.hub.autoscaler_demand import Shape, actor_demands, group_demands, node_loads
from actorhub.hub.drain_table import DrainTable
from actorhub.hub.placement_groups import REMOVED, group_info
from actorhub.hub.records import (
    ALIVE,
    DEAD,
    ActorRecord,
    Decisions,
    DuplicateActorId,
    HostedActor,
    HubShuttingDown,
    InvalidSpec,
    JobRecord,
    JobRegistration,
    KillPlan,
    NameTaken,
    NodeRecord,
    Placement,
    UnknownJob,
    UnknownNode,
    WorkerKill,
    actor_info,
    constructor_failed,
    died,
    killed_message,
)
from actorhub.hub.resources import GpuSlots, take
from actorhub.hub.task_loans import LoanAnswer, replace_loans
from actorhub.namespaces.rules import anonymous_namespace

__all__ = ["ActorRecord", "ActorTable", "Decisions", "KillPlan", "Placement", "Watch", "WorkerKill"]


@dataclass(frozen=True)
class Watch:
    """A wait registered on an actor's record (`ActorTable.watch_actor`)."""

    actor_id: str
    key: int


class ActorTable(DrainTable):
    """Thread-safe: every public method takes the one lock; none blocks on I/O under it, so the
    hub calls them inline on its event loop. Waiting for a record to change is `watch_actor`."""

    # ---- nodes -------------------------------------------------------------------------

    def register_node(
        self, node_id: str, address: str, num_cpus: float, pid: int, hosted: Sequence[HostedActor] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> Decisions:
        """`hosted`: the node registers again after losing the hub, and runs these actors."""
        out = Decisions()
        with self._lock:
            old = self._nodes.get(node_id)
            same_agent = old is not None and old.alive and old.pid == pid
            if old is not None and old.alive and not same_agent:
                # A new agent under the same id: the old agent's workers went with it.
                self._node_died_locked(old, out)
            held = [r for r in self._actors.values() if r.reserved_on == node_id]
            self._node_counter += 1
            # The same agent registering again keeps its lease valid; a new agent's does not.
            if old is None:
                generation = 1
            else:
                generation = old.generation if same_agent else old.generation + 1
            node = self._nodes[node_id] = NodeRecord(
                node_id=node_id,
                address=address,
                num_cpus=num_cpus,
                available_cpus=num_cpus - sum(r.reserved_cpus for r in held),
                pid=pid,
                order=old.order if old is not None else self._node_counter,
                generation=generation,
                actors=len(held),
                resources=dict(resources or {}),
                available=dict(resources or {}),
                gpus=GpuSlots(int((resources or {}).get("GPU", 0))),
            )
            self._reserve_bundles_on(node)
            reported_gpus = {(h.actor_id, h.incarnation): h.gpu_ids for h in hosted or ()}
            for r in held:
                r.gpu_ids = list(reported_gpus.get((r.actor_id, r.incarnation), r.gpu_ids))
                take(node.available, r.reserved_resources)
                gpus = r.reserved_resources.get("GPU", 0.0)
                if r.gpu_ids or not gpus:
                    node.gpus.claim(r.gpu_ids, gpus)
                else:
                    # Restored from the store, which keeps no ids, and not reported by the node
                    # (a start still under way): count the GPUs as held under new ids.
                    r.gpu_ids = node.gpus.assign(gpus) or []
            self._hold_bundle_gpus(node, held)
            self._dirty_nodes[node_id] = node
            self._counters_dirty = True
            if hosted is not None:
                self._reconcile_locked(node, hosted, out)
            self._schedule_pending_locked(out)
        return out

    def lease_node(self, node_id: str) -> int:
        """The node's registration generation: a lease only speaks for the registration it saw."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.alive:
                raise UnknownNode(f"node {node_id} is not registered")
            return node.generation

    def node_died(self, node_id: str, generation: int) -> Decisions:
        out = Decisions()
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.alive or node.generation != generation:
                return out
            self._node_died_locked(node, out)
            self._schedule_pending_locked(out)
        return out

    # ---- jobs --------------------------------------------------------------------------

    def register_job(
        self, namespace: str, driver_pid: int, driver_address: str, owns_cluster: bool
    ) -> JobRegistration:
        with self._lock:
            if self._shutting_down:
                raise HubShuttingDown("the hub is shutting down")
            self._job_counter += 1
            job = JobRecord(
                job_id=f"{self._job_counter:08x}",
                namespace=namespace or anonymous_namespace(),
                driver_pid=driver_pid,
                driver_address=driver_address,
                owns_cluster=owns_cluster,
            )
            self._jobs[job.job_id] = job
            self._dirty_jobs[job.job_id] = job
            self._counters_dirty = True
            alive = [n for n in self._nodes.values() if n.alive]
            # The driver's node is one on its host when there is one (its store is the one the
            # driver can map), else the oldest.
            host = driver_address.rpartition(":")[0]
            alive = [n for n in alive if n.address.rpartition(":")[0] == host] or alive
            node_id = min(alive, key=lambda n: n.order).node_id if alive else ""
            return JobRegistration(job.job_id, job.namespace, node_id)

    def check_job(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.alive:
                raise UnknownJob(f"job {job_id} is not registered or has ended")

    def job_ended(self, job_id: str) -> Decisions:
        out = Decisions()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.alive:
                return out
            job.alive = False
            self._dirty_jobs[job_id] = job
            for actor_id in sorted(self._job_roots.pop(job_id, ())):
                root = self._actors.get(actor_id)
                if root is not None:
                    self._kill_by_owner(root, f"The actor {root.label} died: its owner job {job_id} ended", out)
            self._remove_job_groups(job_id, out)
            out.shutdown_cluster = job.owns_cluster
            self._schedule_pending_locked(out)
        return out

    # ---- actors ------------------------------------------------------------------------

    def create_actor(
        self, spec: common_pb2.ActorSpec, get_if_exists: bool
    ) -> tuple[common_pb2.ActorInfo, bool, Decisions]:
        """(info, existed, decisions). Atomic: two creators of one name get one actor."""
        if not spec.actor_id:
            raise InvalidSpec("the actor spec has an empty actor_id")
        if spec.num_cpus < 0:
            raise InvalidSpec(f"num_cpus must be >= 0, got {spec.num_cpus}")
        if spec.max_restarts < -1:
            raise InvalidSpec(f"max_restarts must be >= -1, got {spec.max_restarts}")
        out = Decisions()
        with self._lock:
            if self._shutting_down:
                raise HubShuttingDown("the hub is shutting down")
            existing = self._actors.get(spec.actor_id)
            if existing is not None:
                if _same_request(existing.spec, spec):
                    # A retry of a request that reached the hub before the caller lost the reply
                    # (the hub restarted): the caller's actor, made once.
                    return actor_info(existing), False, out
                raise DuplicateActorId(f"an actor with id {spec.actor_id} already exists")
            if spec.name:
                holder = self._names.holder(spec.namespace, spec.name)
                if holder is not None:
                    if get_if_exists:
                        return actor_info(self._actors[holder]), True, out
                    raise NameTaken(
                        f"an actor named '{spec.name}' already exists in namespace '{spec.namespace}'"
                    )
            own = common_pb2.ActorSpec()
            own.CopyFrom(spec)
            rec = ActorRecord(spec=own)
            self._actors[own.actor_id] = rec
            if own.name:
                self._names.claim(own.namespace, own.name, own.actor_id)
            orphaned = self._link_owner(rec)
            self._touch(rec)
            if orphaned:
                self._kill_locked(rec, orphaned, out)
            else:
                self._try_place(rec, out)
            return actor_info(rec), False, out

    def start_finished(self, placement: Placement, reply: node_pb2.NodeStartActorReply) -> Decisions:
        out = Decisions()
        with self._lock:
            rec = self._current(placement)
            if rec is None:
                if reply.ok:
                    # Killed, restarted or its node declared dead meanwhile: no orphan may stay.
                    out.kills.append(WorkerKill(placement.actor_id, placement.incarnation,
                                                placement.node_id, placement.node_address))
                return out
            rec.placing = False
            rec.avoid.clear()
            rec.first_failure = None
            if not reply.ok:
                self._mark_dead(rec, constructor_failed(rec, reply.error), out)
            else:
                rec.state = ALIVE
                rec.address = reply.address
                rec.worker_id = reply.worker_id
                rec.pid = reply.pid
                self._touch(rec)
                if rec.early_exit:
                    cause, rec.early_exit = rec.early_exit, ""
                    self._exited_locked(rec, cause, out)
            self._schedule_pending_locked(out)
        return out

    def start_failed(self, placement: Placement, error: str) -> Decisions:
        """StartActor did not reach the node: try another node now, or this one again later."""
        out = Decisions()
        with self._lock:
            rec = self._current(placement)
            if rec is None:
                return out
            rec.placing = False
            self._release(rec)
            rec.node_id = ""
            now = self._clock()
            if rec.first_failure is None:
                rec.first_failure = now
            if now - rec.first_failure >= self._placement_timeout_s:
                self._mark_dead(rec, died(rec, f"it could not be placed: {error}"), out)
            else:
                rec.avoid[placement.node_id] = now + self._avoid_node_s
                self._touch(rec)
                self._try_place(rec, out)
            self._schedule_pending_locked(out)
        return out

    def report_lent(self, node_id: str, lent: float) -> tuple[Decisions, float, float]:
        decisions, reserved, wanted, _ = self.report_loans(node_id, lent)
        return decisions, reserved, wanted

    def report_loans(
        self, node_id: str, lent: float, lent_resources: Mapping[str, float] | None = None,
        lent_gpus: Mapping[int, float] | None = None, claim: Mapping[str, float] | None = None,
        bundle_loans: Iterable[hub_pb2.PlacementGroupGpuLoan] = (),
    ) -> tuple[Decisions, float, float, LoanAnswer]:
        """A node's desk lends `lent` CPUs to tasks, and `lent_resources` (GPUs `lent_gpus`)
        besides: place what now fits; the CPUs actors reserve on that node and those pending
        actors wait for there (the desk lends neither), and whether `claim` is lent on top
        (hub/task_loans.py)."""
        out = Decisions()
        answer = LoanAnswer()
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None:
                return out, 0.0, 0.0, answer
            fell = lent < node.lent_cpus
            node.lent_cpus = lent
            fell = replace_loans(node, lent_resources or {}, lent_gpus or {}) or fell
            self._replace_bundle_loans(node, bundle_loans)
            if claim:
                answer = self._grant_claim(node, claim)
            answer = LoanAnswer(answer.granted, answer.gpu_ids, dict(node.resources), answer.bundle_index)
            if fell:
                self._schedule_pending_locked(out)
            # A draining node's desk lends nothing new: to it, actors hold every CPU.
            reserved = node.num_cpus if node.draining else node.num_cpus - node.available_cpus
            wanted = sum(
                self._actors[a].spec.num_cpus for a in self._pending if self._actors[a].waiting_on == node_id
            )
            return out, reserved, wanted, answer

    def schedule_pending(self) -> Decisions:
        out = Decisions()
        with self._lock:
            self._schedule_pending_locked(out)
        return out

    def request_kill(
        self, actor_id: str, no_restart: bool, incarnation: int | None = None, exit_reason: str = ""
    ) -> KillPlan:
        """`incarnation` (with no_restart=False; None: the current one): a request retried after
        that incarnation was replaced must not kill its successor. `exit_reason`: the actor ends
        itself (exit_actor), which its death cause says instead of a kill."""
        out = Decisions()
        with self._lock:
            rec = self._get(actor_id)
            target: WorkerKill | None = None
            cause = ""
            stale = not no_restart and incarnation is not None and incarnation != rec.incarnation
            if rec.state != DEAD and not stale:
                if no_restart:
                    message = f"The actor {rec.label} {exit_reason}" if exit_reason else killed_message(rec)
                    target = self._kill_locked(rec, message, out)
                elif rec.state == ALIVE:
                    target = self._worker_kill(rec)
                    cause = f"its worker process (pid {rec.pid}) was killed by kill()"
            self._schedule_pending_locked(out)
            return KillPlan(target, out, cause)

    def worker_exited(self, actor_id: str, incarnation: int, cause: str, node_id: str = "") -> Decisions:
        """The process of this incarnation is gone. Reports for other incarnations are stale."""
        out = Decisions()
        with self._lock:
            rec = self._actors.get(actor_id)
            if rec is None or rec.state == DEAD or rec.incarnation != incarnation:
                return out
            if node_id and rec.node_id and rec.node_id != node_id:
                return out
            if rec.state == ALIVE:
                self._exited_locked(rec, cause, out)
            elif rec.placing:
                # StartActor has not answered yet; whether this was a constructor failure or a
                # crash right after it depends on that answer.
                rec.early_exit = cause
            self._schedule_pending_locked(out)
        return out

    def watch_actor(
        self, actor_id: str, min_incarnation: int, wake: Callable[[], None]
    ) -> tuple[common_pb2.ActorInfo, Watch | None]:
        """WaitActor's check, and its wait when the check fails, in one step under the lock.

        (info, None) when the actor is DEAD, or ALIVE at `min_incarnation` or later. Otherwise
        (info as it is now, a watch): `wake()` is called once, under the table's lock, at the
        record's next change or the hub's shutdown; it must not block or call the table. Drop
        the watch with `unwatch` once done waiting, woken or not. Raises UnknownActor, and
        HubShuttingDown instead of waiting once the hub is shutting down.
        """
        with self._lock:
            rec = self._get(actor_id)
            if rec.state == DEAD or (rec.state == ALIVE and rec.incarnation >= min_incarnation):
                return actor_info(rec), None
            if self._shutting_down:
                raise HubShuttingDown("hub shutting down")
            self._watch_counter += 1
            watch = Watch(actor_id, self._watch_counter)
            self._watchers.setdefault(actor_id, {})[watch.key] = wake
            return actor_info(rec), watch

    def unwatch(self, watch: Watch) -> None:
        with self._lock:
            waiting = self._watchers.get(watch.actor_id)
            if waiting is not None:
                waiting.pop(watch.key, None)
                if not waiting:
                    del self._watchers[watch.actor_id]

    def watcher_count(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._watchers.values())

    def wait_actor(
        self,
        actor_id: str,
        min_incarnation: int,
        timeout_s: float,
        keep_waiting: Callable[[], bool] = lambda: True,
    ) -> common_pb2.ActorInfo:
        """WaitActor on a thread (the service waits on its loop with `watch_actor` instead):
        the info once ready, or after `timeout_s` (0: no limit), or once `keep_waiting()` says
        no (asked every `poll_s`)."""
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
        while True:
            woke = threading.Event()
            info, watch = self.watch_actor(actor_id, min_incarnation, woke.set)
            if watch is None:
                return info
            try:
                wait = self._poll_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return info
                    wait = min(wait, remaining)
                if not keep_waiting():
                    return info
                woke.wait(wait)
            finally:
                self.unwatch(watch)

    def get_actor(self, actor_id: str) -> common_pb2.ActorInfo:
        with self._lock:
            return actor_info(self._get(actor_id))

    def named_actor(self, name: str, namespace: str) -> common_pb2.ActorInfo | None:
        with self._lock:
            holder = self._names.holder(namespace, name)
            return actor_info(self._actors[holder]) if holder is not None else None

    def list_actors(
        self, namespace: str, all_namespaces: bool, named_only: bool, include_dead: bool
    ) -> list[common_pb2.ActorInfo]:
        with self._lock:
            return [
                actor_info(rec)
                for rec in self._actors.values()
                if (all_namespaces or rec.spec.namespace == namespace)
                and (not named_only or rec.spec.name)
                and (include_dead or rec.state != DEAD)
            ]

    def alive_nodes(self) -> list[tuple[str, str]]:
        """(node id, address) of every alive node."""
        with self._lock:
            return [(n.node_id, n.address) for n in self._nodes.values() if n.alive]

    def autoscaler_view(
        self,
    ) -> tuple[list[hub_pb2.AutoscalerNode], Counter[Shape], list[hub_pb2.AutoscalerGroupDemand]]:
        """The alive nodes' load, the pending actors' and groups' demand (hub/autoscaler_demand.py)."""
        with self._lock:
            return (node_loads(self._nodes.values(), self._actors.values()),
                    actor_demands(self._actors[a] for a in self._pending),
                    group_demands(self._groups[g] for g in self._pending_groups if g in self._groups))

    def cluster_status(self) -> hub_pb2.ClusterStatus:
        with self._lock:
            return hub_pb2.ClusterStatus(
                nodes=[
                    hub_pb2.NodeStatus(node_id=n.node_id, address=n.address, num_cpus=n.num_cpus,
                                       available_cpus=n.available_cpus, alive=n.alive, pid=n.pid,
                                       resources=n.resources, available_resources=n.available,
                                       draining=n.draining, drained=n.drained)
                    for n in sorted(self._nodes.values(), key=lambda n: n.order)
                ],
                actors=[actor_info(r) for r in self._actors.values() if r.state != DEAD],
                live_jobs=sum(1 for j in self._jobs.values() if j.alive),
                driver_addresses=[j.driver_address for j in self._jobs.values() if j.alive and j.driver_address],
                placement_groups=[group_info(g) for g in self._groups.values() if g.state != REMOVED],
            )

    # ---- shutdown and persistence ------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def begin_shutdown(self) -> list[str] | None:
        """The addresses of the alive nodes to stop; None when shutdown had already begun."""
        with self._lock:
            if self._shutting_down:
                return None
            self._shutting_down = True
            self._wake_all()
            return [n.address for n in self._nodes.values() if n.alive]


def _same_request(existing: common_pb2.ActorSpec, spec: common_pb2.ActorSpec) -> bool:
    return (existing.class_name, existing.name, existing.namespace, existing.owner_job_id,
            existing.owner_actor_id, existing.detached) == (spec.class_name, spec.name, spec.namespace,
                                                             spec.owner_job_id, spec.owner_actor_id, spec.detached)
