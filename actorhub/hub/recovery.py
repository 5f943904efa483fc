"""The actor table's persistence: what it hands the store, and how a restarted hub rebuilds it.

A hub that crashed left its decisions in the store (`control_store`). `restore` rebuilds the
table from that snapshot before the hub serves: records, the name directory, the owner
indexes, CPU reservations and the counters. What the store cannot know is what happened while
no hub ran, so every alive node counts as unconfirmed until its agent registers again and
reports the actors it hosts (`_reconcile_locked`):
- an ALIVE actor it reports keeps running untouched: its callers never noticed the outage;
- an ALIVE actor it does not report died meanwhile and restarts within its budget;
- an actor that was being started there (the hub died during StartActor) becomes ALIVE when
  the node reports it constructed; otherwise StartActor is sent again, and the node joins
  the start still under way rather than starting a second one: one instance, never two;
- anything else it reports (a killed actor, an older incarnation) is an orphan and is killed.
A node (or a job's driver) that does not come back within the service's grace period is taken
as dead, as a broken lease would have been.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from actorhub._proto.v1 import common_pb2
from actorhub.hub.control_store import (
    JOB_COUNTER,
    NODE_COUNTER,
    ActorRow,
    JobRow,
    NodeRow,
    Snapshot,
    StoreBatch,
)
from actorhub.hub.placement_group_table import GroupTable
from actorhub.hub.records import (
    ALIVE,
    DEAD,
    ActorRecord,
    Decisions,
    HostedActor,
    JobRecord,
    NodeRecord,
    Placement,
    WorkerKill,
)


class RecoverableState(GroupTable):
    def restore(self, snapshot: Snapshot) -> Decisions:
        """Rebuild an empty table from the store; what to do once serving (place the pending)."""
        out = Decisions()
        with self._lock:
            if self._actors or self._nodes or self._jobs:
                raise RuntimeError("restore() needs an empty actor table")
            for n in snapshot.nodes:
                self._nodes[n.node_id] = NodeRecord(
                    node_id=n.node_id, address=n.address, num_cpus=n.num_cpus, available_cpus=n.num_cpus,
                    pid=n.pid, order=n.order, generation=n.generation, alive=n.alive)
            self._restore_groups(snapshot.placement_groups)
            for row in snapshot.actors:
                self._restore_actor(row, out)
            for j in snapshot.jobs:
                self._jobs[j.job_id] = JobRecord(j.job_id, j.namespace, j.driver_pid, j.driver_address,
                                                 j.owns_cluster, j.alive)
            highest_job = max((int(j.job_id, 16) for j in snapshot.jobs if _is_hex(j.job_id)), default=0)
            self._job_counter = max(snapshot.counters.get(JOB_COUNTER, 0), highest_job)
            self._node_counter = max(snapshot.counters.get(NODE_COUNTER, 0),
                                     max((n.order for n in snapshot.nodes), default=0))
            while len(self._dead) > self._max_dead_actors:
                oldest = next(iter(self._dead))
                del self._dead[oldest]
                self._actors.pop(oldest, None)
                self._forgotten.append(oldest)
            self._schedule_pending_locked(out)
        return out

    def _restore_actor(self, row: ActorRow, out: Decisions) -> None:
        rec = ActorRecord(
            spec=row.spec, state=cast("common_pb2.ActorState", row.state), incarnation=row.incarnation,
            address=row.address, node_id=row.node_id, worker_id=row.worker_id, pid=row.pid,
            num_restarts=row.num_restarts, death_cause=row.death_cause, kill_requested=row.kill_requested,
            kill_message=row.kill_message, version=row.version,
        )
        actor_id = rec.actor_id
        self._actors[actor_id] = rec
        if rec.state == DEAD:
            self._dead[actor_id] = None
            return
        spec = rec.spec
        if spec.name:
            self._names.claim(spec.namespace, spec.name, actor_id)
        if not spec.detached:
            if spec.owner_actor_id:
                self._children.setdefault(spec.owner_actor_id, set()).add(actor_id)
            elif spec.owner_job_id:
                self._job_roots.setdefault(spec.owner_job_id, set()).add(actor_id)
        node = self._nodes.get(rec.node_id) if rec.node_id else None
        if node is None or not node.alive:
            if rec.state == ALIVE:
                # Its node was already gone when the hub died (the record could not say so).
                self._exited_locked(rec, f"its node {rec.node_id or '(unknown)'} died", out)
            else:
                rec.node_id = ""
                self._pending[actor_id] = None
            return
        node.available_cpus -= spec.num_cpus
        node.actors += 1
        rec.reserved_on = node.node_id
        rec.reserved_cpus = spec.num_cpus
        # Which GPUs it had is the node's to know; the node registers again with its resources
        # and then counts these as held (ActorTable.register_node).
        rec.reserved_resources = dict(spec.resources)
        # PENDING or RESTARTING with a node: StartActor was under way. Settled by that node's
        # report when it registers again, or by its death when it does not.
        rec.placing = rec.state != ALIVE

    def _reconcile_locked(self, node: NodeRecord, hosted: Sequence[HostedActor], out: Decisions) -> None:
        """The node registered again and hosts `hosted`: make the table agree (module docstring)."""
        reported = {(h.actor_id, h.incarnation): h for h in hosted}
        for rec in list(self._actors.values()):
            if rec.state == DEAD or rec.node_id != node.node_id or not (rec.state == ALIVE or rec.placing):
                continue
            found = reported.pop((rec.actor_id, rec.incarnation), None)
            if rec.state == ALIVE:
                if found is None or found.starting:
                    self._exited_locked(rec, "its worker process ended while the hub was away", out)
                elif (found.address, found.pid) != (rec.address, rec.pid):
                    rec.address, rec.pid, rec.worker_id = found.address, found.pid, found.worker_id
                    self._touch(rec)
            elif found is not None and not found.starting:
                rec.placing = False
                rec.state = ALIVE
                rec.address, rec.pid, rec.worker_id = found.address, found.pid, found.worker_id
                rec.avoid.clear()
                rec.first_failure = None
                self._touch(rec)
            else:
                # Started again: the node joins a start still under way, or makes the first.
                out.placements.append(Placement(rec.actor_id, rec.incarnation, rec.spec, node.node_id, node.address,
                                                tuple(rec.gpu_ids)))
        for h in reported.values():
            out.kills.append(WorkerKill(h.actor_id, h.incarnation, node.node_id, node.address))

    def unconfirmed(self) -> tuple[list[tuple[str, int]], list[str]]:
        """After `restore`: the alive nodes (id, generation) and the alive jobs, which must each
        reconnect (a lease) within the grace period or be taken as dead."""
        with self._lock:
            return ([(n.node_id, n.generation) for n in self._nodes.values() if n.alive],
                    [j.job_id for j in self._jobs.values() if j.alive])

    def take_dirty(self) -> StoreBatch:
        """What changed since the last call, as rows for the store."""
        with self._lock:
            actors, self._dirty_actors = self._dirty_actors, {}
            jobs, self._dirty_jobs = self._dirty_jobs, {}
            nodes, self._dirty_nodes = self._dirty_nodes, {}
            forgotten, self._forgotten = self._forgotten, []
            groups, forgotten_groups = self._take_dirty_groups()
            batch = StoreBatch(
                actors=[self._row(r) for r in actors.values()],
                jobs=[JobRow(j.job_id, j.namespace, j.driver_pid, j.driver_address, j.owns_cluster, j.alive)
                      for j in jobs.values()],
                nodes=[NodeRow(n.node_id, n.address, n.num_cpus, n.pid, n.order, n.generation, n.alive)
                       for n in nodes.values()],
                forgotten_actors=forgotten,
                placement_groups=groups,
                forgotten_groups=forgotten_groups,
            )
            if self._counters_dirty:
                batch.counters = {JOB_COUNTER: self._job_counter, NODE_COUNTER: self._node_counter}
                self._counters_dirty = False
            return batch

    @staticmethod
    def _row(r: ActorRecord) -> ActorRow:
        spec_changed, r.spec_dirty = r.spec_dirty, False
        return ActorRow(r.actor_id, r.spec, r.state, r.incarnation, r.num_restarts, r.node_id, r.address,
                        r.death_cause, r.version, r.worker_id, r.pid, r.kill_requested, r.kill_message,
                        spec_changed)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
