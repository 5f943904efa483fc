"""The task submitter's decisions, with no I/O: placement, the lease pools, and task retries.

No actor calls, hub calls or threads here. `TaskSubmitter` (`submitter`) holds its lock while
it calls the methods marked "under the lock", carries out what they return (ask a desk for a
lease, run tasks on a lease, give leases back, finish tasks) and reports what came of it. Time
comes from an injected clock, so the 50 ms idle return, the 10 ms short-task rule and the 5 s a
desk that could not lend is passed over are testable without waiting.

The rules (ARCHITECTURE.md, "Tasks"):
- Whose desk a lease is asked from is the task's scheduling strategy's choice
  (`task_placement`: DEFAULT's node holding the arguments, then Ray's hybrid policy from the
  caller's node; SPREAD; node affinity); an idle lease from another node is reused only while
  the preferred node is full. A pinned task uses its node's pool.
- Ask for another lease only while leases held + asked for are fewer than the cluster's CPUs
  for that shape (`max_leases`: how many of its vector the nodes fit), and fewer requests than
  ready tasks. A task no node could ever fit (in all) waits, infeasible, until one joins.
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
from actorhub.hub.resources import EPSILON
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_table import ErrorOrigin
from actorhub.tasks import task_placement
from actorhub.tasks.lease_shapes import Shape, copies_fit
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

# An executor that cannot be placed again is one whose node is gone.
_WORKER_GONE = (ErrorKind.ACTOR_DIED, ErrorKind.ACTOR_UNAVAILABLE, ErrorKind.ACTOR_UNSCHEDULABLE)

# A lease pool: (the node its tasks must run on, or "" for any; CPUs per task; the tasks'
# resolved runtime_env as wire JSON, "" for none; what each task asks for besides CPUs, () for
# nothing). A lease serves the tasks of its own pool only: its executor runs in that env, and
# its desk lent it that shape.
Pool = tuple[str, float, str, Shape]


class Task:
    __slots__ = (
        "arg_stores",
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
        "trace",
    )

    def __init__(self, seq: int, name: str, code: tuple[str, bytes], args_blob: bytes,
                 options: TaskOptions, object_ids: list[str], runtime_env: str = "") -> None:
        self.seq = seq
        self.name = name
        self.dispatched_at = 0.0
        self.fn_id, self.fn_blob = code
        self.args_blob = args_blob
        self.options = options
        self.pool: Pool = (options.node_id, options.num_cpus, runtime_env, options.shape)
        self.object_ids = object_ids
        self.retries_left = options.max_retries  # -1: without limit
        self.stream: ItemStream | None = None  # a generator task's items (runtime/item_stream.py)
        # The trace context of its submission, carried to its dispatch (runtime/tracing.py); None untraced.
        self.trace: dict[str, str] | None = None
        self.cancelled = False
        self.deps_left = 0
        self.dep_error: tuple[RemoteError, ErrorOrigin | None] | None = None
        self.lease: Lease | None = None
        # Where its ref arguments are stored and their bytes there (0: not known), as the object
        # table records them (DEFAULT tasks with such arguments only): the node holding most of
        # those bytes is preferred (task_placement.locality).
        self.arg_stores: list[tuple[str, int]] | None = None
        self.namespace = ""  # its job's, set at submission (a task in a task: the outer task's job's)


class Lease:
    __slots__ = ("broken", "executor", "gpu_ids", "idle_since", "inflight", "lost", "node", "pool")

    def __init__(self, executor: Any, pool: Pool, node: str, gpu_ids: tuple[int, ...] = ()) -> None:
        self.executor = executor  # the leased executor's handle; opaque here
        self.gpu_ids = gpu_ids  # the node's GPUs its desk lent with it
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
        # Alive node id -> its totals besides CPUs (only nodes that have any); replaced as `nodes`.
        self.node_resources: dict[str, dict[str, float]] = {}
        self.nodes_at = 0.0
        # Pools no node could ever fit, whose tasks wait in `ready` for one: whether the user
        # was told (once per pool, as Ray's warning).
        self.infeasible: dict[Pool, bool] = {}
        self.load: defaultdict[str, float] = defaultdict(float)  # CPUs leased or asked for, per node
        self.avoid: dict[str, float] = {}  # node id -> until when tasks pass it over
        # For placement (tasks/task_placement.py): CPUs actors hold per node and node ids by
        # address, as the hub said last; the node the last SPREAD lease was asked from.
        self.reserved: dict[str, float] = {}
        self.node_of_address: dict[str, str] = {}
        self.spread_after = ""

    # -- the view of the cluster --------------------------------------------------------------------
    def nodes_seen(self, nodes: dict[str, float], resources: dict[str, dict[str, float]] | None = None) -> list[Pool]:
        """Under the lock: the alive nodes, their CPUs and other resources, as the hub said just
        now. Returns a pool per lease to ask for now (counted asked): for tasks that wait while
        the cluster can lend more leases of their shape than they have, such as infeasible tasks
        that a node fits now, or any waiting task once nodes joined (the autoscaler's)."""
        self.nodes = nodes
        self.node_resources = resources or {}
        self.nodes_at = self.clock()
        revived: list[Pool] = []
        for pool in [pool for pool, waiting in self.ready_pools.items() if waiting > 0]:
            limit = self.max_leases(pool)
            if limit:
                self.infeasible.pop(pool, None)
                asks = max(0, min(self.ready_pools[pool], limit - self.held[pool]) - self.requested[pool])
                self.requested[pool] += asks
                revived += [pool] * asks
        return revived

    def nodes_stale(self, now: float) -> bool:
        # Sooner while tasks wait for a node that fits them: it may have joined.
        return now - self.nodes_at > (NODES_EVERY_S / 4 if self.infeasible else NODES_EVERY_S)

    def warn_infeasible(self, pool: Pool) -> bool:
        """Under the lock: True once for a pool found infeasible, whose user should be told."""
        if self.infeasible.get(pool) is False:
            self.infeasible[pool] = True
            return True
        return False

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
        lease = self._idle_lease(pool, self.preferred(task) if task.arg_stores else "")
        if lease is not None:
            self.idle.remove(lease)
            lease.inflight += 1
            return lease
        self.ready.append(task)
        self.ready_pools[pool] += 1
        # Desks cannot lend more than their nodes' CPUs at once; asking for more only queues
        # requests there. Leases held count too: once they are as many as the cluster can lend,
        # another request would only wait at a desk, and meanwhile keep each lease one task deep.
        limit = self.max_leases(pool)
        ask = self.requested[pool] < self.ready_pools[pool] and self.requested[pool] + self.held[pool] < limit
        if ask:
            self.requested[pool] += 1
        elif not limit:
            self.infeasible.setdefault(pool, False)  # no node fits it: it waits for one (nodes_seen)
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
    def lease_requested(self, pool: Pool, prefer: str = "") -> str:
        """Under the lock: the node whose desk to ask for a lease of `pool` (`prefer`: the node
        holding its task's arguments); counted as its load."""
        node = task_placement.pinned_node(pool[0]) or self.choose_node(pool[1], pool[3], pool[0], prefer)
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
        if not task_placement.pinned_node(pool[0]) and node != self.local_node:
            # Another node could not lend (it died, say): these tasks can run elsewhere.
            now = self.clock()
            self.avoid[node] = now + AVOID_NODE_S
            again = self.ready_pools[pool] > self.requested[pool]
            if again and not any(self.avoid.get(n, 0.0) <= now and cpus >= pool[1] - EPSILON
                                 and self.could_fit(n, pool[3]) for n, cpus in self.nodes.items()):
                # Only nodes passed over have what it asks for (the one that had it left, say, an
                # idle node the autoscaler stopped): ask again at the next view of the nodes, not
                # at once of a desk that could never lend it.
                self.infeasible.setdefault(pool, False)
                again = False
            if again:
                self.requested[pool] += 1
            return again, []
        doomed = [t for t in self.ready if t.pool == pool]
        for t in doomed:
            self.ready.remove(t)
        self.ready_pools[pool] -= len(doomed)
        return False, doomed

    def take_ready(self, doomed: Callable[[Pool], bool]) -> list[Task]:
        """Under the lock: the queued tasks whose pool can never run (`doomed`), out of the queue."""
        taken = [t for t in self.ready if doomed(t.pool)]
        for t in taken:
            self.ready.remove(t)
            self.ready_pools[t.pool] -= 1
        return taken

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
    def preferred(self, task: Task) -> str:
        """The node holding most of a DEFAULT task's stored arguments, "" for none."""
        if task.arg_stores is None or task.pool[0]:
            return ""
        return task_placement.locality(task.arg_stores, self.local_node, self.node_of_address)

    def _idle_lease(self, pool: Pool, prefer: str = "") -> Lease | None:
        """An idle lease for `pool`. One from another node only while the preferred node (the
        caller's, or the one holding the task's arguments) has no room: a task that may run
        anywhere runs there when it can, next to its data."""
        local = prefer or task_placement.preferred_node(pool[0]) or self.local_node
        fallback = None
        for lease in self.idle:
            if lease.pool == pool:
                if lease.node == local:
                    return lease
                fallback = fallback or lease
        if (fallback is not None and task_placement.may_move(pool[0]) and self.room(local) >= pool[1]
                and self.could_fit(local, pool[3])):
            return None  # ask the caller's node's desk; the other lease goes back when it idles
        return fallback

    def room(self, node: str) -> float:
        """CPUs of `node` neither actors hold (as the hub said last) nor this submitter holds or
        has asked for."""
        return self.nodes.get(node, 0.0) - self.reserved.get(node, 0.0) - self.load[node]

    def max_leases(self, pool: Pool) -> int:
        """How many leases of `pool` the cluster can lend at once; 0: no node could ever fit one.
        A pinned pool gets 1 at least: its node's desk says whether it can lend (a node that
        lacks a resource, e.g. a placement group's bundle not there yet, makes it wait)."""
        node, cpus, shape = task_placement.pinned_node(pool[0]), pool[1], pool[3]
        if shape:
            none: dict[str, float] = {}
            names = [node] if node else list(self.nodes)
            fit = sum(max(0, copies_fit(cpus, shape, self.nodes.get(n, 0.0), self.node_resources.get(n, none)))
                      for n in names)
            return max(1, fit) if node else fit
        if cpus <= 0:
            return ZERO_CPU_LEASES
        if node:
            return max(1, int(self.nodes.get(node, 1.0) // cpus))
        return sum(int(size // cpus) for size in self.nodes.values())

    def could_fit(self, node: str, shape: Shape) -> bool:
        """Whether `node` has, in all, what a task asks for besides CPUs."""
        if not shape:
            return True
        totals = self.node_resources.get(node, {})
        return all(totals.get(name, 0.0) >= amount - EPSILON for name, amount in shape)

    def choose_node(self, cpus: float, shape: Shape = (), placement: str = "", prefer: str = "") -> str:
        """Whose desk to ask for a lease of a task that may run elsewhere than one node: its
        scheduling strategy's choice (`placement`, tasks/task_placement.py) among the nodes that
        could run it; `prefer`: the node holding the task's arguments."""
        local = self.local_node
        spread = placement == task_placement.SPREAD_POOL
        # The node holding its arguments, or its soft affinity's (that spills when busy): there
        # whenever it has room, as Ray's locality-aware leasing does.
        target = prefer or task_placement.preferred_node(placement)
        if cpus <= 0 and not shape and not spread:
            return target or local
        now = self.clock()
        fits = [n for n, size in self.nodes.items()
                if size >= cpus and self.avoid.get(n, 0.0) <= now and self.could_fit(n, shape)]
        if shape and not fits:  # only nodes passed over have it: better one of them than one without
            fits = [n for n, size in self.nodes.items() if size >= cpus and self.could_fit(n, shape)]
        room = {n: self.room(n) for n in fits}
        if target in room and room[target] >= cpus:
            return target
        if spread:
            node = task_placement.round_robin(fits, room, cpus, list(self.nodes), self.spread_after)
            self.spread_after = node or self.spread_after
            return node or local  # none fits: the caller's desk says why it cannot lend
        return task_placement.hybrid(fits, room, self.nodes, cpus, local, local)


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
