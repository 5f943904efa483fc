"""The task submitter's decisions, with no I/O: placement, the lease pools, and task retries.

No actor calls, hub calls or threads here. `TaskSubmitter` (`submitter`) holds its lock while
it calls the methods marked "under the lock", carries out what they return (ask a desk for a
lease, run tasks on a lease, give leases back, finish tasks) and reports what came of it. Time
comes from an injected clock, so the 50 ms idle return, the 10 ms short-task rule and the 5 s a
desk that could not lend is passed over are testable without waiting.

The rules (ARCHITECTURE.md, "Tasks"):
- A task that may run anywhere leases from the caller's node while that has room, else from
  the node with the most room, else queues at the caller's node; an idle lease from another
  node is reused only while the caller's node is full. A pinned task uses its node's pool.
- Ask for another lease only while leases held + asked for are fewer than the cluster's CPUs
  for that shape (`max_leases`), and fewer requests than ready tasks.
- A lease carries one task at a time while more leases are coming; up to `PIPELINE_DEPTH` once
  none are, if the pool's last task came back within `SHORT_TASK_S`.
- Idle leases go back after `LINGER_S`.
- A task whose worker died is retried (same lease, or another one when that lease's node is
  gone) up to max_retries; application errors only if retry_exceptions says so.
"""

from __future__ import annotations

import enum
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

import cloudpickle

from actorhub.exceptions import TaskCancelledError
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_table import ErrorOrigin
from actorhub.tasks.options import TaskOptions
from actorhub.wire.errors import ErrorKind, RemoteError

LINGER_S = 0.05
# Tasks one lease may carry at once when no more leases are coming: the executor still runs
# them one at a time (one CPU), but they travel in one frame instead of one round trip each.
PIPELINE_DEPTH = 16
# Tasks of a pool whose last one came back sooner than this are short: only those go several
# to a lease at once. Long ones go one at a time, so that a lease that frees up takes the next
# (queued behind a long task on a busy lease, it would wait while an idle one has nothing).
SHORT_TASK_S = 0.01
# A node whose desk could not lend is passed over this long by tasks that may run anywhere.
AVOID_NODE_S = 5.0
# How often the view of the cluster's nodes (and their CPUs) is refreshed.
NODES_EVERY_S = 2.0
# Leases of tasks that need no CPU: as many as a desk will lend.
ZERO_CPU_LEASES = 64

_WORKER_GONE = (ErrorKind.ACTOR_DIED, ErrorKind.ACTOR_UNAVAILABLE)

# A lease pool: (the node its tasks must run on, or "" for any; CPUs per task; the tasks'
# resolved runtime_env as wire JSON, "" for none). A lease serves the tasks of its own pool only:
# its executor runs in that env.
Pool = tuple[str, float, str]


class Task:
    __slots__ = (
        "args_blob",
        "cancelled",
        "dep_error",
        "deps_left",
        "dispatched_at",
        "fn_blob",
        "fn_id",
        "lease",
        "name",
        "namespace",
        "object_ids",
        "options",
        "pool",
        "retries_left",
        "seq",
        "stream",
    )

    def __init__(self, seq: int, name: str, code: tuple[str, bytes], args_blob: bytes,
                 options: TaskOptions, object_ids: list[str], runtime_env: str = "") -> None:
        self.seq = seq
        self.name = name
        self.dispatched_at = 0.0
        self.fn_id, self.fn_blob = code
        self.args_blob = args_blob
        self.options = options
        self.pool: Pool = (options.node_id, options.num_cpus, runtime_env)
        self.object_ids = object_ids
        self.retries_left = options.max_retries  # -1: without limit
        self.stream: ItemStream | None = None  # a generator task's items (runtime/item_stream.py)
        self.cancelled = False
        self.deps_left = 0
        self.dep_error: tuple[RemoteError, ErrorOrigin | None] | None = None
        self.lease: Lease | None = None
        self.namespace = ""  # its job's, set at submission (a task in a task: the outer task's job's)


class Lease:
    __slots__ = ("broken", "executor", "idle_since", "inflight", "lost", "node", "pool")

    def __init__(self, executor: Any, pool: Pool, node: str) -> None:
        self.executor = executor  # the leased executor's handle; opaque here
        self.pool = pool
        self.node = node  # whose desk lent it
        self.idle_since = 0.0
        self.inflight = 0
        self.lost = False  # its node died: it takes no more tasks
        # Its executor's runtime_env failed to set up: the tasks it takes meanwhile fail alike, and
        # it goes back to its desk as broken, so a later lease of that env tries the setup again.
        self.broken = False


class Outcome(enum.Enum):
    """What to do with a task whose execute call came back."""

    DONE = "done"  # its results are the call's
    CANCELLED = "cancelled"
    RETRY = "retry"  # again on the same lease (its executor restarts, or an application error)
    RETRY_UNLESS_NODE_GONE = "retry unless node gone"  # the lease's node may be gone: ask the hub
    CRASHED = "crashed"  # out of retries after its worker died: WorkerCrashedError
    FAILED = "failed"  # the call's error is the task's


class SubmitState:
    """Guarded by the submitter's lock, except where a method says otherwise."""

    def __init__(self, local_node: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.local_node = local_node
        self.clock = clock
        self.ready: deque[Task] = deque()
        self.ready_pools: Counter[Pool] = Counter()
        self.requested: Counter[Pool] = Counter()
        self.held: defaultdict[Pool, int] = defaultdict(int)  # leases granted and not given back
        self.short: set[Pool] = set()  # pools whose last task came back within SHORT_TASK_S
        self.idle: list[Lease] = []
        self.tasks: dict[str, Task] = {}  # by each of its object ids, for cancel()
        # Alive node id -> its CPUs. Replaced whole, never changed in place, so it is read
        # without the lock.
        self.nodes: dict[str, float] = {}
        self.nodes_at = 0.0
        self.load: defaultdict[str, float] = defaultdict(float)  # CPUs leased or asked for, per node
        self.avoid: dict[str, float] = {}  # node id -> until when tasks pass it over

    # -- the view of the cluster --------------------------------------------------------------------
    def nodes_seen(self, nodes: dict[str, float]) -> None:
        """Under the lock: the alive nodes and their CPUs, as the hub said just now."""
        self.nodes = nodes
        self.nodes_at = self.clock()

    def nodes_stale(self, now: float) -> bool:
        return now - self.nodes_at > NODES_EVERY_S

    # -- tasks ----------------------------------------------------------------------------------------
    def submitted(self, task: Task) -> None:
        """Under the lock."""
        for object_id in task.object_ids:
            self.tasks[object_id] = task

    def finished(self, task: Task) -> None:
        """Under the lock: the task's results are settled; cancel() has nothing to stop."""
        for object_id in task.object_ids:
            self.tasks.pop(object_id, None)

    def task_ready(self, task: Task) -> Lease | bool:
        """Under the lock: its arguments are ready. An idle lease to run it on at once, or
        whether to ask a desk for a lease (True: call `lease_requested`); else it waits."""
        if task.cancelled:
            return False
        pool = task.pool
        lease = self._idle_lease(pool)
        if lease is not None:
            self.idle.remove(lease)
            lease.inflight += 1
            return lease
        self.ready.append(task)
        self.ready_pools[pool] += 1
        # Desks cannot lend more than their nodes' CPUs at once; asking for more only queues
        # requests there. Leases held count too: once they are as many as the cluster can lend,
        # another request would only wait at a desk, and meanwhile keep each lease one task deep.
        ask = self.requested[pool] < self.ready_pools[pool] and (
            self.requested[pool] + self.held[pool] < self.max_leases(pool))
        if ask:
            self.requested[pool] += 1
        return ask

    def cancel(self, object_id: str) -> tuple[Task | None, bool]:
        """Under the lock: marks the task of `object_id` cancelled; (the task or None if it is
        not running or queued here, whether it was queued: then it is out of the queue)."""
        task = self.tasks.get(object_id)
        if task is None:
            return None, False
        task.cancelled = True
        queued = task in self.ready
        if queued:
            self.ready.remove(task)
            self.ready_pools[task.pool] -= 1
        return task, queued

    # -- leases -----------------------------------------------------------------------------------------
    def lease_requested(self, pool: Pool) -> str:
        """Under the lock: the node whose desk to ask for a lease of `pool`; counted as its load."""
        node = pool[0] or self.choose_node(pool[1])
        self.load[node] += pool[1]
        return node

    def lease_granted(self, lease: Lease) -> list[Task]:
        """Under the lock: a desk lent `lease`; the tasks to run on it now."""
        self.requested[lease.pool] -= 1
        self.held[lease.pool] += 1
        return self.next_tasks(lease)

    def lease_refused(self, pool: Pool, node: str) -> tuple[bool, list[Task]]:
        """Under the lock: `node`'s desk could not lend a lease of `pool`. Returns whether to
        ask again (another node may lend it), and the tasks that cannot run at all."""
        self.requested[pool] -= 1
        self.load[node] -= pool[1]
        if not pool[0] and node != self.local_node:
            # Another node could not lend (it died, say): these tasks can run elsewhere.
            self.avoid[node] = self.clock() + AVOID_NODE_S
            again = self.ready_pools[pool] > self.requested[pool]
            if again:
                self.requested[pool] += 1
            return again, []
        doomed = [t for t in self.ready if t.pool == pool]
        for t in doomed:
            self.ready.remove(t)
        self.ready_pools[pool] -= len(doomed)
        return False, doomed

    def lease_lost(self, lease: Lease) -> None:
        """Under the lock: `lease`'s node is gone; the task it ran goes elsewhere."""
        lease.inflight -= 1
        if not lease.lost:
            lease.lost = True
            self.load[lease.node] -= lease.pool[1]
            self.held[lease.pool] -= 1

    def task_left(self, lease: Lease) -> list[Task]:
        """Under the lock: a task of `lease` is settled; the tasks to run on it now."""
        lease.inflight -= 1
        return self.next_tasks(lease)

    def next_tasks(self, lease: Lease) -> list[Task]:
        """Under the lock: more work for the lease (counted in flight), or it goes idle."""
        taken: list[Task] = []
        if lease.lost:
            return taken
        pool = lease.pool
        depth = PIPELINE_DEPTH if pool in self.short and not self.requested[pool] else 1
        if self.ready_pools[pool]:
            for task in list(self.ready):
                if lease.inflight + len(taken) >= depth:
                    break
                if task.pool == pool:
                    self.ready.remove(task)
                    taken.append(task)
            self.ready_pools[pool] -= len(taken)
        lease.inflight += len(taken)
        if not lease.inflight:
            lease.idle_since = self.clock()
            self.idle.append(lease)
        return taken

    def expired_leases(self, now: float) -> list[Lease]:
        """Under the lock: leases idle longer than LINGER_S, no longer held; give them back."""
        old = [lease for lease in self.idle if now - lease.idle_since > LINGER_S]
        for lease in old:
            self.idle.remove(lease)
            self.load[lease.node] -= lease.pool[1]
            self.held[lease.pool] -= 1
        return old

    def take_idle(self) -> list[Lease]:
        """Under the lock: every idle lease, to give back at close."""
        idle, self.idle = self.idle, []
        return idle

    # -- a task came back (no lock: it touches the task and the `short` set only) -----------------
    def task_returned(self, task: Task, error: RemoteError | None, lease_node: str) -> Outcome:
        if self.clock() - task.dispatched_at < SHORT_TASK_S:
            self.short.add(task.pool)
        else:
            self.short.discard(task.pool)
        if error is None:
            return Outcome.DONE
        if task.cancelled or is_cancellation(error):
            return Outcome.CANCELLED
        if error.kind in _WORKER_GONE:
            if not _retry(task):
                return Outcome.CRASHED
            # Its executor cannot come back on a node that is gone; only the hub can tell.
            return Outcome.RETRY_UNLESS_NODE_GONE if lease_node != self.local_node else Outcome.RETRY
        if error.kind == ErrorKind.APPLICATION and task.options.retries_exception(
            exception_of(error)
        ) and _retry(task):
            return Outcome.RETRY
        return Outcome.FAILED

    # -- placement ------------------------------------------------------------------------------------
    def _idle_lease(self, pool: Pool) -> Lease | None:
        """An idle lease for `pool`. One from another node only while the caller's node has no
        room: a task that may run anywhere runs here when it can, next to its data."""
        local = self.local_node
        fallback = None
        for lease in self.idle:
            if lease.pool == pool:
                if lease.node == local:
                    return lease
                fallback = fallback or lease
        if fallback is not None and not pool[0] and self.room(local) >= pool[1]:
            return None  # ask the caller's node's desk; the other lease goes back when it idles
        return fallback

    def room(self, node: str) -> float:
        """CPUs of `node` this submitter neither holds nor has asked for."""
        return self.nodes.get(node, 0.0) - self.load[node]

    def max_leases(self, pool: Pool) -> int:
        """How many leases of `pool` the cluster can lend at once."""
        node, cpus = pool[0], pool[1]
        if cpus <= 0:
            return ZERO_CPU_LEASES
        sizes = [self.nodes.get(node, 1.0)] if node else list(self.nodes.values())
        return max(1, sum(int(size // cpus) for size in sizes))

    def choose_node(self, cpus: float) -> str:
        """Whose desk to ask for a lease of a task that may run anywhere.

        The caller's node while it has room (no transfer of arguments or results), else the
        node with the most room; when all are full, the caller's node queues it.
        """
        local = self.local_node
        if cpus <= 0:
            return local
        now = self.clock()
        fits = [n for n, size in self.nodes.items() if size >= cpus and self.avoid.get(n, 0.0) <= now]
        room = {n: self.room(n) for n in fits}
        if room.get(local, 0.0) >= cpus:
            return local
        roomy = [n for n in fits if room[n] >= cpus]
        if roomy:
            return max(roomy, key=room.__getitem__)
        if local in room or not fits:
            return local  # its desk queues the request, or says why it cannot lend
        return fits[0]


def _retry(task: Task) -> bool:
    """Spend one of the task's retries; False when it has none left."""
    if task.retries_left == 0:
        return False
    if task.retries_left > 0:
        task.retries_left -= 1
    return True


def exception_of(error: RemoteError) -> BaseException | None:
    if not error.pickled:
        return None
    try:
        value = cloudpickle.loads(error.pickled)
    except Exception:
        return None
    return value if isinstance(value, BaseException) else None


def is_cancellation(error: RemoteError) -> bool:
    return error.kind == ErrorKind.TASK_CANCELLED or error.type_name.endswith(
        TaskCancelledError.__qualname__
    )
