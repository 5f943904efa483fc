"""TaskSubmitter: the caller's side of tasks, one per process.

A task waits for its top-level ObjectRef arguments here, holding no worker. Once they are
ready it needs a lease: an executor leased from a node's LeaseDesk (an actor call). Tasks that
may run anywhere lease from the caller's node while it has CPUs to lend, then from the node
with the most room; a NodeAffinitySchedulingStrategy pins them to one node's desk.
A lease runs one task at a time and is kept for the caller's following tasks while there are
any, then returned after a short idle time. A task whose worker died is retried on the same
lease (its executor restarts) up to `max_retries`; application errors only if
`retry_exceptions` says so. Everything here runs on the caller's thread or in completion
callbacks, never blocking: the only waits are the user's own get().
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, defaultdict, deque
from functools import partial
from typing import TYPE_CHECKING, Any

import cloudpickle
import grpc

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import TaskCancelledError
from actorhub.namespaces import SYSTEM_NAMESPACE
from actorhub.runtime.object_ref import ObjectRef
from actorhub.runtime.object_table import ErrorOrigin
from actorhub.tasks.lease_desk import LeaseDesk, desk_name
from actorhub.tasks.options import TaskOptions
from actorhub.wire.errors import error_to_proto, system_error

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime
    from actorhub.tasks.remote_function import RemoteFunction

_LINGER_S = 0.05
# Tasks one lease may carry at once when no more leases are coming: the executor still runs
# them one at a time (one CPU), but they travel in one frame instead of one round trip each.
_PIPELINE_DEPTH = 16
# Tasks of a pool whose last one came back sooner than this are short: only those go several
# to a lease at once. Long ones go one at a time, so that a lease that frees up takes the next
# (queued behind a long task on a busy lease, it would wait while an idle one has nothing).
_SHORT_TASK_S = 0.01
_WORKER_GONE = (common_pb2.ERROR_KIND_ACTOR_DIED, common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE)
# A node whose desk could not lend is passed over this long by tasks that may run anywhere.
_AVOID_NODE_S = 5.0
# How often the view of the cluster's nodes (and their CPUs) is refreshed.
_NODES_EVERY_S = 2.0

# A lease pool: (the node its tasks must run on, or "" for any; CPUs per task). A lease serves
# the tasks of its own pool only.
Pool = tuple[str, float]


class _Task:
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
        "object_ids",
        "options",
        "pool",
        "retries_left",
        "seq",
    )

    def __init__(self, seq: int, name: str, code: tuple[str, bytes], args_blob: bytes,
                 options: TaskOptions, object_ids: list[str]) -> None:
        self.seq = seq
        self.name = name
        self.dispatched_at = 0.0
        self.fn_id, self.fn_blob = code
        self.args_blob = args_blob
        self.options = options
        self.pool: Pool = (options.node_id, options.num_cpus)
        self.object_ids = object_ids
        self.retries_left = options.max_retries
        self.cancelled = False
        self.deps_left = 0
        self.dep_error: tuple[common_pb2.ErrorInfo, ErrorOrigin | None] | None = None
        self.lease: _Lease | None = None


class _Lease:
    __slots__ = ("executor", "idle_since", "inflight", "lost", "node", "pool")

    def __init__(self, executor: Any, pool: Pool, node: str) -> None:
        self.executor = executor
        self.pool = pool
        self.node = node  # whose desk lent it
        self.idle_since = 0.0
        self.inflight = 0
        self.lost = False  # its node died: it takes no more tasks


class TaskSubmitter:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._lock = threading.Lock()
        self._ready: deque[_Task] = deque()
        self._ready_pools: Counter[Pool] = Counter()
        self._requested: Counter[Pool] = Counter()
        self._held: defaultdict[Pool, int] = defaultdict(int)  # leases granted and not given back
        self._short: set[Pool] = set()  # pools whose last task came back within _SHORT_TASK_S
        self._idle: list[_Lease] = []
        self._tasks: dict[str, _Task] = {}  # by each of its object ids, for cancel()
        self._seq = itertools.count(1)
        self._desks: dict[str, Any] = {}  # by node id
        self._nodes: dict[str, float] = {}  # alive node id -> its CPUs
        self._nodes_at = 0.0
        self._load: defaultdict[str, float] = defaultdict(float)  # CPUs leased or asked for, per node
        self._avoid: dict[str, float] = {}  # node id -> until when tasks pass it over
        self._closed = threading.Event()
        threading.Thread(target=self._return_idle_leases, name="actorhub-task-leases", daemon=True).start()

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, function: RemoteFunction[Any, Any], options: TaskOptions, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        rt = self._rt
        name = options.name or function.__qualname__
        # Fails here, at the caller, if an argument does not serialize.
        args_blob, held = rt.call_arguments(args, kwargs, name, stage=options.num_returns > 0)
        seq = next(self._seq)
        n = options.num_returns
        object_ids = [f"{rt.caller_id}.t{seq:x}.{i}" for i in range(n)]
        rt.objects.create_pending(object_ids, ErrorOrigin(name))
        refs = rt.refs_for(object_ids)
        if held:
            rt.hold_until_settled(object_ids, held)
        task = _Task(seq, name, function.code(), args_blob, options, object_ids)
        with self._lock:
            for object_id in object_ids:
                self._tasks[object_id] = task
        if not self._nodes or (options.node_id and options.node_id not in self._nodes):
            self._refresh_nodes()  # the first task, or a node that may have joined since
        deps = [a for a in (*args, *kwargs.values()) if type(a) is ObjectRef]
        if options.node_id and options.node_id not in self._nodes:
            self._finish(task, error=system_error(
                f"task {name} cannot run: its NodeAffinitySchedulingStrategy names node {options.node_id}, "
                f"which is not an alive node of this cluster", common_pb2.ERROR_KIND_TASK_UNSCHEDULABLE))
        elif deps:
            task.deps_left = len(deps)
            for dep in deps:
                rt.start_fetch(dep)
                rt.objects.add_callback(dep.hex(), partial(self._dep_ready, task, dep))
        else:
            self._make_ready(task)
        if n == 1:
            return refs[0]
        return refs if n else None

    def _dep_ready(self, task: _Task, dep: ObjectRef[Any]) -> None:
        _, error, origin = self._rt.objects.read(dep.hex())
        with self._lock:
            task.deps_left -= 1
            if error is not None and task.dep_error is None:
                task.dep_error = (error, origin)
            if task.deps_left:
                return
        if task.cancelled:
            self._finish_cancelled(task)
        elif task.dep_error is not None:
            # The error of the task that failed, under its own name, at every task downstream.
            self._finish(task, error=task.dep_error[0], origin=task.dep_error[1])
        else:
            self._make_ready(task)

    def _make_ready(self, task: _Task) -> None:
        pool = task.pool
        with self._lock:
            if task.cancelled:
                return
            lease = self._idle_lease(pool)
            if lease is not None:
                self._idle.remove(lease)
                lease.inflight += 1
            else:
                self._ready.append(task)
                self._ready_pools[pool] += 1
                # Desks cannot lend more than their nodes' CPUs at once; asking for more only
                # queues requests there.
                # Leases held count too: once they are as many as the cluster can lend, another
                # request would only wait at a desk, and meanwhile keep each lease one task deep.
                ask = self._requested[pool] < self._ready_pools[pool] and (
                    self._requested[pool] + self._held[pool] < self._max_leases(pool))
                if ask:
                    self._requested[pool] += 1
        if lease is not None:
            self._dispatch(lease, task)
        elif ask:
            self._request_lease(pool)

    # -- leases ------------------------------------------------------------------------------------
    def _idle_lease(self, pool: Pool) -> _Lease | None:
        """Under the lock: an idle lease for `pool`. One from another node only while the caller's
        node has no room: a task that may run anywhere runs here when it can, next to its data."""
        local = self._rt.node_id
        fallback = None
        for lease in self._idle:
            if lease.pool == pool:
                if lease.node == local:
                    return lease
                fallback = fallback or lease
        if fallback is not None and not pool[0] and self._room(local) >= pool[1]:
            return None  # ask the caller's node's desk; the other lease goes back when it idles
        return fallback

    def _desk_handle(self, node_id: str) -> Any:
        desk = self._desks.get(node_id)
        if desk is None:
            from actorhub.api.actor_class import ActorClass, create_actor
            from actorhub.api.options import ActorOptions
            from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            desk_class = ActorClass(LeaseDesk, ActorOptions(
                name=desk_name(node_id), namespace=SYSTEM_NAMESPACE, get_if_exists=True,
                lifetime="detached", max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id),
            ))
            # Concurrent first uses make the same actor (get_if_exists); either handle will do.
            desk = self._desks[node_id] = create_actor(self._rt, desk_class, node_id, self._nodes.get(node_id, 1.0))
        return desk

    def _refresh_nodes(self) -> None:
        status = self._rt.hub.GetClusterStatus(common_pb2.Empty(), timeout=30)
        nodes = {n.node_id: n.num_cpus for n in status.nodes if n.alive}
        with self._lock:
            self._nodes = nodes
            self._nodes_at = time.monotonic()

    def _try_refresh_nodes(self) -> bool:
        """Refresh the view of the nodes; False (the view as it was) if the hub is away."""
        try:
            self._refresh_nodes()
        except grpc.RpcError:
            return False
        return True

    def _room(self, node: str) -> float:
        """Under the lock: CPUs of `node` this submitter neither holds nor has asked for."""
        return self._nodes.get(node, 0.0) - self._load[node]

    def _max_leases(self, pool: Pool) -> int:
        """Under the lock: how many leases of `pool` the cluster can lend at once."""
        node, cpus = pool
        if cpus <= 0:
            return 64
        sizes = [self._nodes.get(node, 1.0)] if node else list(self._nodes.values())
        return max(1, sum(int(size // cpus) for size in sizes))

    def _choose_node(self, cpus: float) -> str:
        """Under the lock: whose desk to ask for a lease of a task that may run anywhere.

        The caller's node while it has room (no transfer of arguments or results), else the
        node with the most room; when all are full, the caller's node queues it.
        """
        local = self._rt.node_id
        if cpus <= 0:
            return local
        now = time.monotonic()
        fits = [n for n, size in self._nodes.items() if size >= cpus and self._avoid.get(n, 0.0) <= now]
        room = {n: self._room(n) for n in fits}
        if room.get(local, 0.0) >= cpus:
            return local
        roomy = [n for n in fits if room[n] >= cpus]
        if roomy:
            return max(roomy, key=room.__getitem__)
        if local in room or not fits:
            return local  # its desk queues the request, or says why it cannot lend
        return fits[0]

    def _request_lease(self, pool: Pool) -> None:
        if self._rt.closed:
            return
        with self._lock:
            node = pool[0] or self._choose_node(pool[1])
            self._load[node] += pool[1]
        ref = self._desk_handle(node).lease.remote(pool[1], self._rt.address)
        self._rt.objects.add_callback(ref.hex(), partial(self._on_lease, ref, pool, node))

    def _on_lease(self, ref: ObjectRef[Any], pool: Pool, node: str) -> None:
        try:
            lease = _Lease(self._rt.value_of(ref.hex()), pool, node)
        except Exception as e:  # e.g. more CPUs than the node has: those tasks cannot run
            again = False
            doomed: list[_Task] = []
            with self._lock:
                self._requested[pool] -= 1
                self._load[node] -= pool[1]
                if not pool[0] and node != self._rt.node_id:
                    # Another node could not lend (it died, say): these tasks can run elsewhere.
                    self._avoid[node] = time.monotonic() + _AVOID_NODE_S
                    again = self._ready_pools[pool] > self._requested[pool]
                    if again:
                        self._requested[pool] += 1
                else:
                    doomed = [t for t in self._ready if t.pool == pool]
                    for t in doomed:
                        self._ready.remove(t)
                    self._ready_pools[pool] -= len(doomed)
            if again:
                self._request_lease(pool)
            for t in doomed:
                self._finish(t, error=error_to_proto(e))
            return
        with self._lock:
            self._requested[pool] -= 1
            self._held[pool] += 1
        self._next(lease)

    def _node_gone(self, node: str) -> bool:
        # If the hub cannot tell now, the task is retried where it was.
        return self._try_refresh_nodes() and node not in self._nodes

    def _lose(self, lease: _Lease) -> None:
        with self._lock:
            lease.inflight -= 1
            if not lease.lost:
                lease.lost = True
                self._load[lease.node] -= lease.pool[1]
                self._held[lease.pool] -= 1

    def _next(self, lease: _Lease) -> None:
        """Give the lease more work, or make it idle if it has none."""
        pool = lease.pool
        taken: list[_Task] = []
        with self._lock:
            if lease.lost:
                return
            depth = _PIPELINE_DEPTH if pool in self._short and not self._requested[pool] else 1
            if self._ready_pools[pool]:
                for task in list(self._ready):
                    if lease.inflight + len(taken) >= depth:
                        break
                    if task.pool == pool:
                        self._ready.remove(task)
                        taken.append(task)
                self._ready_pools[pool] -= len(taken)
            lease.inflight += len(taken)
            if not lease.inflight:
                lease.idle_since = time.monotonic()
                self._idle.append(lease)
        for task in taken:
            self._dispatch(lease, task)

    def _dispatch(self, lease: _Lease, task: _Task) -> None:
        if self._rt.closed:
            self._finish(task, error=system_error(
                f"task {task.name} did not run: this process shut down its connection to the cluster",
                common_pb2.ERROR_KIND_SYSTEM))
            return
        task.lease = lease
        task.dispatched_at = time.monotonic()
        n = task.options.num_returns
        method = lease.executor.execute if n <= 1 else lease.executor.execute.options(num_returns=n)
        result = method.remote(task.fn_id, task.fn_blob, task.seq, task.args_blob)
        call_refs: list[ObjectRef[Any]] = result if isinstance(result, list) else [result]
        self._rt.objects.add_callback(call_refs[-1].hex(), partial(self._on_done, task, lease, call_refs))

    def _on_done(self, task: _Task, lease: _Lease, call_refs: list[ObjectRef[Any]]) -> None:
        if time.monotonic() - task.dispatched_at < _SHORT_TASK_S:
            self._short.add(task.pool)
        else:
            self._short.discard(task.pool)
        objects = self._rt.objects
        _, error, _ = objects.read(call_refs[0].hex())
        if error is None:
            self._finish(task, results=call_refs)
        elif task.cancelled or _is_cancellation(error):
            self._finish_cancelled(task)
        elif error.kind in _WORKER_GONE:
            if self._retry(task):
                if lease.node != self._rt.node_id and self._node_gone(lease.node):
                    # Its executor cannot come back there: the task runs on another lease.
                    self._lose(lease)
                    self._make_ready(task)
                    return
                self._dispatch(lease, task)  # the same lease: its executor restarts
                return
            self._finish(task, error=system_error(
                f"the worker running task {task.name} died ({error.message}); "
                f"it was tried {task.options.max_retries + 1} times (max_retries={task.options.max_retries})",
                common_pb2.ERROR_KIND_WORKER_CRASHED))
        elif error.kind == common_pb2.ERROR_KIND_APPLICATION and task.options.retries_exception(
            _exception_of(error)
        ) and self._retry(task):
            self._dispatch(lease, task)
            return
        else:
            self._finish(task, error=error)
        with self._lock:
            lease.inflight -= 1
        self._next(lease)

    @staticmethod
    def _retry(task: _Task) -> bool:
        if task.retries_left == 0:
            return False
        if task.retries_left > 0:
            task.retries_left -= 1
        return True

    # -- results ---------------------------------------------------------------------------------
    def _finish(self, task: _Task, *, results: list[ObjectRef[Any]] | None = None,
                error: common_pb2.ErrorInfo | None = None, origin: ErrorOrigin | None = None) -> None:
        with self._lock:
            for object_id in task.object_ids:
                self._tasks.pop(object_id, None)
        objects = self._rt.objects
        if error is not None:
            if origin is not None:
                objects.set_origin(task.object_ids, origin)
            objects.complete_many([(oid, None, error) for oid in task.object_ids])
        elif results is not None:
            # The task's objects take the executor call's results over, with the refs lent
            # inside them and their store entries.
            objects.complete_as([(r.hex(), oid) for r, oid in zip(results, task.object_ids, strict=False)])

    def _finish_cancelled(self, task: _Task) -> None:
        self._finish(task, error=system_error(f"task {task.name} was cancelled",
                                              common_pb2.ERROR_KIND_TASK_CANCELLED))

    def cancel(self, ref: ObjectRef[Any], force: bool) -> None:
        with self._lock:
            task = self._tasks.get(ref.hex())
            if task is None:
                return  # finished already (or not a task of this process): nothing to stop
            task.cancelled = True
            queued = task in self._ready
            if queued:
                self._ready.remove(task)
                self._ready_pools[task.pool] -= 1
            lease = task.lease
        if queued:
            self._finish_cancelled(task)
        elif lease is not None:
            if force:
                from actorhub.api.cluster import kill

                kill(lease.executor, no_restart=False)
            else:
                lease.executor.cancel.remote(task.seq)
        # else: still waiting for its arguments; _dep_ready finishes it as cancelled

    # -- leases going back -----------------------------------------------------------------------
    def _return_idle_leases(self) -> None:
        while not self._closed.wait(_LINGER_S / 2):
            now = time.monotonic()
            with self._lock:
                old = [lease for lease in self._idle if now - lease.idle_since > _LINGER_S]
                for lease in old:
                    self._idle.remove(lease)
                    self._load[lease.node] -= lease.pool[1]
                    self._held[lease.pool] -= 1
            for lease in old:
                if self._rt.closed:
                    return
                self._desk_handle(lease.node).release.remote(lease.executor.actor_id)
            if now - self._nodes_at > _NODES_EVERY_S and not self._rt.closed:
                self._try_refresh_nodes()  # nodes that joined or died since

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        if idle:
            refs = [
                self._desk_handle(lease.node).release.remote(lease.executor.actor_id) for lease in idle
            ]
            try:
                self._rt.get(refs, 2.0)
            except Exception:
                pass  # the desk reclaims leases of holders that went away


def _exception_of(error: common_pb2.ErrorInfo) -> BaseException | None:
    if not error.pickled:
        return None
    try:
        value = cloudpickle.loads(error.pickled)
    except Exception:
        return None
    return value if isinstance(value, BaseException) else None


def _is_cancellation(error: common_pb2.ErrorInfo) -> bool:
    return error.kind == common_pb2.ERROR_KIND_TASK_CANCELLED or error.type_name.endswith(
        TaskCancelledError.__qualname__
    )
