"""The actor table's side of a node drain (`hub/node_drain.py` runs it): a layer of the table,
under its lock, with no I/O.

A draining node takes nothing new: `_choose_node` (actors), placement groups' plans and the
node's lease desk (told that actors reserve all its CPUs) all leave it out. Each user actor
there is drained once: a restartable one moves (a restart that spends none of its budget:
neither `num_restarts` nor a `restart_window_s` slot), any other ends DEAD, its cause the drain.
Removing the node at the end is a node loss for whatever still runs there, except that the node
is recorded as drained, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorhub.hub.records import ALIVE, ActorRecord, ActorTableError, Decisions, UnknownNode, WorkerKill
from actorhub.hub.recovery import RecoverableState
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.node.offered import HEAD_RESOURCE

# A desk's loans below this count as none (float CPU counts).
_EPSILON = 1e-9


class DrainRefused(ActorTableError):
    """A node that may not be drained: the head's (the hub's own host; drivers there use it)."""


@dataclass(frozen=True)
class DrainTarget:
    """An actor to drain: its worker and whether it moves (another node can take it now)."""

    actor_id: str
    incarnation: int
    address: str
    move: bool


class DrainTable(RecoverableState):
    def begin_drain(self, node_id: str) -> None:
        """Mark the node draining (again: nothing changes). Raises UnknownNode for a node that is
        not alive, DrainRefused for the head node."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.alive:
                known = "was removed by a drain" if node is not None and node.drained else (
                    "is not alive" if node is not None else "is not known to the hub")
                raise UnknownNode(f"cannot drain node {node_id}: it {known}")
            if HEAD_RESOURCE in node.resources:
                raise DrainRefused(f"cannot drain node {node_id}: it is the head node, which the hub and "
                                   "its drivers use (stop the cluster instead)")
            node.draining = True

    def drain_targets(self, node_id: str, started: set[str]) -> list[DrainTarget]:
        """The user actors alive on the node and not drained yet. actorhub's own (lease desks,
        task executors) stay until the node is removed: the task path retries what ran there."""
        with self._lock:
            out = []
            for rec in self._actors.values():
                if (rec.state == ALIVE and rec.node_id == node_id and rec.actor_id not in started
                        and rec.spec.namespace != SYSTEM_NAMESPACE):
                    move = _restartable_off(rec, node_id) and self._choose_node(rec)[0] is not None
                    out.append(DrainTarget(rec.actor_id, rec.incarnation, rec.address, move))
            return out

    def node_busy(self, node_id: str) -> bool:
        """User actors still run or start on the node, or its desk lends to tasks."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.alive:
                return False
            if node.lent_cpus > _EPSILON or any(v > _EPSILON for v in node.lent_resources.values()):
                return True
            return any(rec.node_id == node_id and (rec.state == ALIVE or rec.placing)
                       and rec.spec.namespace != SYSTEM_NAMESPACE for rec in self._actors.values())

    def actors_on(self, node_id: str) -> int:
        with self._lock:
            return sum(1 for rec in self._actors.values()
                       if rec.node_id == node_id and (rec.state == ALIVE or rec.placing)
                       and rec.spec.namespace != SYSTEM_NAMESPACE)

    def actor_drained(self, actor_id: str, incarnation: int, node_id: str) -> tuple[Decisions, WorkerKill | None, bool]:
        """No call of this incarnation runs any more (worker/drain.py): (decisions, the worker to
        kill, whether the actor restarts elsewhere). None to kill: the record moved on already."""
        out = Decisions()
        with self._lock:
            rec = self._actors.get(actor_id)
            if rec is None or rec.state != ALIVE or rec.incarnation != incarnation or rec.node_id != node_id:
                return out, None, False
            kill = self._worker_kill(rec)
            if not _restartable_off(rec, node_id):
                self._kill_locked(rec, f"The actor {rec.label} died: its node {node_id} was drained", out)
                self._schedule_pending_locked(out)
                return out, kill, False
            # A move, not a crash: the restart budget stays as it was.
            self._release(rec)
            rec.address = ""
            rec.worker_id = ""
            rec.placing = False
            rec.early_exit = ""
            self._restart_elsewhere(rec, out)
            self._schedule_pending_locked(out)
            return out, kill, True

    def remove_drained_node(self, node_id: str) -> tuple[Decisions, str]:
        """The drain is over: the node leaves as removed (what still runs there is lost as on a
        node's death). (decisions, the node's address to stop; "" when it is gone already)."""
        out = Decisions()
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not node.alive:
                return out, ""
            node.drained = True
            self._node_died_locked(node, out)
            node.draining = False
            self._schedule_pending_locked(out)
            return out, node.address


def _restartable_off(rec: ActorRecord, node_id: str) -> bool:
    """It may restart and is not pinned (hard) to the drained node."""
    pinned_here = rec.spec.node_id == node_id and not rec.spec.node_affinity_soft
    return rec.spec.max_restarts != 0 and not pinned_here
