"""TaskSubmitter: the caller's side of tasks, one per process.

A task waits for its top-level ObjectRef arguments here, holding no worker. Once they are
ready it needs a lease: an executor leased from a node's LeaseDesk (an actor call), the desk
its scheduling strategy picks (tasks/task_placement.py).
A lease runs one task at a time and is kept for the caller's following tasks while there are
any, then returned after a short idle time. A task whose worker died is retried on the same
lease (its executor restarts) up to `max_retries`; application errors only if
`retry_exceptions` says so. Everything here runs on the caller's thread or in completion
callbacks, never blocking: the only waits are the user's own get().

This module is the I/O half: actor calls to desks and executors, completion callbacks, the
hub, the thread that gives idle leases back. Every decision is `submit_state.SubmitState`'s,
taken under this submitter's lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from actorhub.autoscaler.task_demand import TaskDemandReporter, backlog_demands
from actorhub.config import Config
from actorhub.exceptions import (
    ActorUnschedulableError,
    RpcFailedError,
    TaskPlacementGroupRemoved,
    TaskUnschedulableError,
)
from actorhub.namespaces import SYSTEM_NAMESPACE
from actorhub.runtime import log_markers, task_context
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_ref import ObjectRef
from actorhub.runtime.object_ref_generator import streaming_result
from actorhub.runtime.object_table import ErrorOrigin
from actorhub.runtime_env import context as runtime_env_context
from actorhub.tasks import task_placement
from actorhub.tasks.lease_desk import LeaseDesk, desk_name
from actorhub.tasks.lease_shapes import demand_text
from actorhub.tasks.lineage import Lineage
from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import LINGER_S, Lease, Outcome, Pool, SubmitState, Task
from actorhub.util.placement_group_calls import in_group, removed_groups
from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from actorhub.wire.autoscaler import AutoscalerHubClient, Demand
from actorhub.wire.errors import ErrorKind, RemoteError, describe, system_error
from actorhub.wire.records import ClusterStatus

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime
    from actorhub.tasks.remote_function import RemoteFunction


_log = logging.getLogger(__name__)

# How long a forced recursive cancel waits for the executor to pass the cancel on to the
# task's children before it kills the executor.
_CANCEL_CHILDREN_S = 5.0
# Outcomes after which a task would run again: not in a placement group that was removed.
_RUN_AGAIN = (Outcome.RETRY, Outcome.RETRY_UNLESS_NODE_GONE, Outcome.CRASHED)


class TaskSubmitter:
    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self._rt = runtime
        self._clock = clock
        self._lock = threading.Lock()
        self._state = SubmitState(runtime.node_id, clock)  # guarded by _lock
        self._seq = itertools.count(1)
        self._last_seq = 0  # the newest task's seq: a running task's children come after the mark it took
        self._desks: dict[str, Any] = {}  # by node id
        self._closed = threading.Event()
        self._lineage: Lineage | None = None  # with enable_object_reconstruction (tasks/lineage.py)
        from actorhub.api.cluster import driver_config

        config = driver_config()
        if config is not None and config.enable_object_reconstruction:  # the driver's own init() flag
            self._lineage = Lineage(runtime, self, config.lineage_max_bytes)
        # Tasks waiting for a lease, told to the hub once a second while there are any (the autoscaler's demand).
        self._demand = TaskDemandReporter(
            AutoscalerHubClient(runtime.channels, runtime.hub.address, runtime.deadlines), runtime.address,
            self._backlog, clock)
        threading.Thread(target=self._return_idle_leases, name="actorhub-task-leases", daemon=True).start()

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, function: RemoteFunction[Any, Any], options: TaskOptions, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        rt = self._rt
        state = self._state
        name = options.name or function.__qualname__
        # Fails here, at the caller, if an argument does not serialize.
        args_blob, held = rt.call_arguments(args, kwargs, name, stage=options.num_returns != 0)
        # Its own env over this process's, resolved (packages uploaded) once per distinct env.
        env = runtime_env_context.effective_env(rt, options.runtime_env)
        if not state.nodes or (options.node_id and options.node_id not in state.nodes):
            # The first task, or a node that may have joined since. Before anything is queued:
            # a hub that stays away raises ControlPlaneUnavailableError here, leaving nothing.
            self._refresh_nodes()
        seq = self._last_seq = next(self._seq)
        mode = options.num_returns if isinstance(options.num_returns, str) else ""
        n = 1 if mode else int(options.num_returns)
        object_ids = [f"{rt.id_prefix()}.t{seq:x}.{i}" for i in range(n)]
        rt.objects.create_pending(object_ids, ErrorOrigin(name))
        refs = rt.refs_for(object_ids)
        if held:
            rt.hold_until_settled(object_ids, held)
        task = Task(seq, name, function.code(), args_blob, options, object_ids, env)
        task.namespace = task_context.namespace_of(rt)
        if _tracing.active():
            task.trace = _tracing.submit_context(name)
        if options.scheduling_strategy is not None and options.scheduling_strategy != "DEFAULT":
            placement = task_placement.placement_of(options, state.nodes, partial(state.could_fit, shape=options.shape))
            task.pool = (placement, *task.pool[1:])
        pinned = task.pool[0] and task_placement.pinned_node(task.pool[0])
        if mode:
            # A generator task: its items stream into this, from whichever run of it gets them first.
            task.stream = ItemStream(rt.objects, rt.address, ErrorOrigin(name))
        if self._lineage is not None:
            self._lineage.submitted(task, held)
        with self._lock:
            state.submitted(task)
        deps = [a for a in (*args, *kwargs.values()) if type(a) is ObjectRef]
        if pinned and pinned not in state.nodes:
            self._finish(task, error=system_error(
                f"task {name} cannot run: its NodeAffinitySchedulingStrategy(soft=False) names node {pinned}, "
                f"which is not an alive node of this cluster", ErrorKind.TASK_UNSCHEDULABLE))
        elif deps:
            task.deps_left = len(deps)
            for dep in deps:
                rt.start_fetch(dep)
                rt.objects.add_callback(dep.hex(), partial(self._dep_ready, task, dep))
        else:
            self._make_ready(task)
        if task.stream is not None:
            return streaming_result(mode, task.stream, refs[0], rt.objects, rt.address)
        if n == 1:
            return refs[0]
        return refs if n else None

    def _dep_ready(self, task: Task, dep: ObjectRef[Any]) -> None:
        objects = self._rt.objects
        _, error, origin = objects.read(dep.hex())
        # Where a DEFAULT task's stored arguments are: it runs next to them when it can.
        stored = objects.store_id_of(dep.hex()) if not task.pool[0] and error is None else ""
        size = objects.stored_bytes_of(dep.hex()) if stored else 0
        with self._lock:
            if stored:
                task.arg_stores = [*(task.arg_stores or ()), (stored, size)]
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

    def _make_ready(self, task: Task) -> None:
        with self._lock:
            decision = self._state.task_ready(task)
            warn = decision is False and self._state.warn_infeasible(task.pool)
        if isinstance(decision, Lease):
            self._dispatch(decision, task)
        elif decision:
            self._request_lease(task.pool, self._state.preferred(task) if task.arg_stores else "")
        elif warn:
            _log.warning(
                "The following resource request cannot be scheduled right now: %s. This is likely due to all "
                "cluster resources being claimed by actors or no node having them. The task (%s) waits until a "
                "node that fits it joins.", demand_text(task.pool[1], task.pool[3]), task.name)

    # -- leases ------------------------------------------------------------------------------------
    def _desk_handle(self, node_id: str) -> Any:
        desk = self._desks.get(node_id)
        if desk is None:
            from actorhub.api.actor_class import ActorClass, create_actor
            from actorhub.api.options import ActorOptions
            from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            desk_class = ActorClass(LeaseDesk, ActorOptions.for_system(
                name=desk_name(node_id), namespace=SYSTEM_NAMESPACE, get_if_exists=True,
                lifetime="detached", max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id),
            ))
            # Concurrent first uses make the same actor (get_if_exists); either handle will do.
            desk = self._desks[node_id] = create_actor(
                self._rt, desk_class, node_id, self._state.nodes.get(node_id, 1.0))
        return desk

    def _request_lease(self, pool: Pool, prefer: str = "") -> None:
        if self._rt.closed:
            return
        with self._lock:
            only = task_placement.pinned_node(pool[0])
            busy = task_placement.fails_when_busy(pool[0]) and self._state.room(only) < pool[1]
            node = self._state.lease_requested(pool, prefer)
        if busy:
            self._lease_refused(pool, node, TaskUnschedulableError(
                f"its NodeAffinitySchedulingStrategy names node {node}, which has no room for it now "
                "(_fail_on_unavailable=True)"))
            return
        try:
            desk = self._desk_handle(node)
        except RpcFailedError as e:
            # A node's first desk needs the hub (CreateActor); it stayed away. Refused, as a
            # desk that cannot lend is: another node's desk may, else these tasks fail with it.
            self._lease_refused(pool, node, e)
            return
        if pool[3]:
            ref = desk.lease.remote(pool[1], self._rt.address, pool[2], dict(pool[3]))
        else:
            ref = desk.lease.remote(pool[1], self._rt.address, pool[2])
        self._rt.objects.add_callback(ref.hex(), partial(self._on_lease, ref, pool, node))

    def _on_lease(self, ref: ObjectRef[Any], pool: Pool, node: str) -> None:
        try:
            lent = self._rt.value_of(ref.hex())
            # A lease of a shape comes with the GPU ids its desk was given for it.
            lease = Lease(lent[0], pool, node, tuple(lent[1])) if pool[3] else Lease(lent, pool, node)
        except Exception as e:  # e.g. more CPUs than the node has: those tasks cannot run
            self._lease_refused(pool, node, e)
            return
        with self._lock:
            taken = self._state.lease_granted(lease)
        for task in taken:
            self._dispatch(lease, task)

    def _lease_refused(self, pool: Pool, node: str, error: Exception) -> None:
        with self._lock:
            again, doomed = self._state.lease_refused(pool, node)
        if again:
            self._request_lease(pool)
        if task_placement.falls_back(pool[0]):
            for t in doomed:  # soft affinity, and its node's desk cannot lend (the node died): anywhere
                t.pool = ("", *t.pool[1:])
                self._make_ready(t)
            return
        if isinstance(error, ActorUnschedulableError):  # the node's desk cannot be placed: the node is gone
            remote = system_error(f"task cannot run on node {node}: {error}", ErrorKind.TASK_UNSCHEDULABLE)
        elif isinstance(error, TaskPlacementGroupRemoved):  # its desk found the group gone
            remote = system_error("task cannot run: its placement group was removed", ErrorKind.PLACEMENT_GROUP_REMOVED)
        else:
            remote = describe(error)
        for t in doomed:
            self._finish(t, error=remote)

    def _dispatch(self, lease: Lease, task: Task) -> None:
        if self._rt.closed:
            self._finish(task, error=system_error(
                f"task {task.name} did not run: this process shut down its connection to the cluster",
                ErrorKind.SYSTEM))
            return
        task.lease = lease
        task.dispatched_at = self._clock()
        n = task.options.num_returns
        # The job is the one whose work this process runs (a task's, in an executor): its driver gets the output.
        job_id = log_markers.current_job(self._rt.job_id)
        args: tuple[Any, ...] = (task.fn_id, task.fn_blob, task.seq, task.args_blob, job_id, task.name,
                self._task_id(task), task.options.num_cpus, task.namespace)
        if task.pool[3]:
            args += (dict(task.pool[3]), list(lease.gpu_ids))
        group = task.options.scheduling_strategy
        if isinstance(group, PlacementGroupSchedulingStrategy) and group.placement_group is not None:
            # Its executor runs it in the group: what it creates joins it when it captures them.
            args += (() if task.pool[3] else (None, None)) + ((
                group.placement_group.id.hex(), group.placement_group_bundle_index,
                bool(group.placement_group_capture_child_tasks)),)
        # On the submitter's thread: the call to the executor joins the trace of the task's submission.
        with _tracing.resumed(task.trace):
            if task.stream is not None:
                result: Any = lease.executor.execute.remote_into(task.stream, *args)
            else:
                method = lease.executor.execute if n == 1 else lease.executor.execute.options(num_returns=n)
                result = method.remote(*args)
        call_refs: list[ObjectRef[Any]] = result if isinstance(result, list) else [result]
        self._rt.objects.add_callback(call_refs[-1].hex(), partial(self._on_done, task, lease, call_refs))

    def _on_done(self, task: Task, lease: Lease, call_refs: list[ObjectRef[Any]]) -> None:
        _, error, _ = self._rt.objects.read(call_refs[0].hex())
        if error is not None and error.kind == ErrorKind.RUNTIME_ENV_SETUP:
            lease.broken = True
        remade = self._lineage.remake_lost_arguments(task, error) if error and self._lineage else None
        if remade is not None:
            # An argument was lost with its node: made again first, and the task runs again after it.
            self.resubmit(task, remade)
            with self._lock:
                taken = self._state.task_left(lease)
            for next_task in taken:
                self._dispatch(lease, next_task)
            return
        outcome = self._state.task_returned(task, error, lease.node)
        if outcome in _RUN_AGAIN and in_group(task.pool[3]) and self._group_removed(task):
            self._end_in_removed_group(task, lease, outcome)
            return
        if outcome is Outcome.DONE:
            self._finish(task, results=call_refs)
        elif outcome is Outcome.CANCELLED:
            self._finish_cancelled(task)
        elif outcome is Outcome.RETRY_UNLESS_NODE_GONE and self._node_gone(lease.node):
            # Its executor cannot come back there: the task runs on another lease.
            with self._lock:
                self._state.lease_lost(lease)
            self._make_ready(task)
            return
        elif outcome is Outcome.RETRY or outcome is Outcome.RETRY_UNLESS_NODE_GONE:
            self._dispatch(lease, task)  # the same lease: its executor restarts
            return
        elif outcome is Outcome.CRASHED:
            assert error is not None
            self._finish(task, error=system_error(
                f"the worker running task {task.name} died ({error.message}); "
                f"it was tried {task.options.max_retries + 1} times (max_retries={task.options.max_retries})",
                ErrorKind.WORKER_CRASHED))
        else:
            self._finish(task, error=error)
        with self._lock:
            taken = self._state.task_left(lease)
        for next_task in taken:
            self._dispatch(lease, next_task)

    # -- results ---------------------------------------------------------------------------------
    def _finish(self, task: Task, *, results: list[ObjectRef[Any]] | None = None,
                error: RemoteError | None = None, origin: ErrorOrigin | None = None) -> None:
        with self._lock:
            self._state.finished(task)
        objects = self._rt.objects
        if error is not None:
            if origin is not None:
                objects.set_origin(task.object_ids, origin)
            objects.complete_many([(oid, None, error) for oid in task.object_ids])
        elif results is not None:
            # The task's objects take the executor call's results over, with the refs lent
            # inside them and their store entries.
            objects.complete_as([(r.hex(), oid) for r, oid in zip(results, task.object_ids, strict=False)])
        if self._lineage is not None:
            self._lineage.finished(task)

    def resubmit(self, task: Task, deps: list[ObjectRef[Any]]) -> None:
        """Run a finished task again (lineage reconstruction, tasks/lineage.py): its results,
        pending again, are completed anew once `deps` (arguments being made again) are ready."""
        task.cancelled = False
        task.dep_error = None
        task.lease = None
        options = task.options
        if options.scheduling_strategy is not None and options.scheduling_strategy != "DEFAULT":
            # Placed again as at its submission, among the nodes alive now (a soft affinity's may be gone).
            placement = task_placement.placement_of(
                options, self._state.nodes, partial(self._state.could_fit, shape=options.shape))
            task.pool = (placement, *task.pool[1:])
        with self._lock:
            self._state.submitted(task)
        pinned = task_placement.pinned_node(task.pool[0])
        if pinned and pinned not in self._state.nodes:
            self._finish(task, error=system_error(
                f"task {task.name} cannot run again to make its lost results: its NodeAffinitySchedulingStrategy"
                f"(soft=False) names node {pinned}, which is not an alive node of this cluster",
                ErrorKind.TASK_UNSCHEDULABLE))
        elif deps:
            task.deps_left = len(deps)
            for dep in deps:
                self._rt.objects.add_callback(dep.hex(), partial(self._dep_ready, task, dep))
        else:
            self._make_ready(task)

    def _finish_cancelled(self, task: Task) -> None:
        self._finish(task, error=system_error(f"task {task.name} was cancelled",
                                              ErrorKind.TASK_CANCELLED))

    def cancel(self, ref: ObjectRef[Any], force: bool, recursive: bool = True) -> None:
        """Cancel the task that makes `ref`: queued, it never runs; running, it is interrupted
        (force: its executor is killed). With `recursive`, the tasks it submitted and that have
        not finished are cancelled too, and theirs, by the process that ran it."""
        self._cancel_id(ref.hex(), force, recursive)

    def _cancel_id(self, object_id: str, force: bool, recursive: bool) -> None:
        with self._lock:
            task, queued = self._state.cancel(object_id)
            lease = task.lease if task is not None else None
        if task is None:
            return  # finished already (or not a task of this process): nothing to stop
        if queued:
            self._finish_cancelled(task)
        elif lease is not None:
            done = lease.executor.cancel.remote(self._task_id(task), recursive, force)
            if force:
                from actorhub.api.cluster import kill

                if recursive:
                    # Its children are told first: once the executor is killed, nobody knows them.
                    self._rt.objects.wait([done.hex()], 1, _CANCEL_CHILDREN_S)
                kill(lease.executor, no_restart=False)
        # else: still waiting for its arguments; _dep_ready finishes it as cancelled

    def _task_id(self, task: Task) -> str:
        """The task's id: its results' ids without their index, unique in the cluster."""
        return f"{self._rt.caller_id}.t{task.seq:x}"

    @property
    def mark(self) -> int:
        """The seq of the newest task submitted: tasks submitted later have greater ones."""
        return self._last_seq

    def cancel_submitted_after(self, mark: int, force: bool) -> None:
        """Cancel, recursively, every unfinished task this process submitted after `mark`: the
        children of a task of this process that is being cancelled."""
        with self._lock:
            children = {t.seq: t for t in self._state.tasks.values() if t.seq > mark}
        for task in children.values():
            if task.object_ids:
                self._cancel_id(task.object_ids[0], force, True)

    # == I/O with the hub: the only place this module talks to it ==================================
    def alive_node_addresses(self) -> set[str]:
        """The addresses of the alive nodes, from the hub, which also refreshes the view of them."""
        return {n.address for n in self._refresh_nodes().nodes if n.alive}

    def _refresh_nodes(self) -> ClusterStatus:
        """The alive nodes and their CPUs, from the hub (raises RpcFailedError if it is away)."""
        status = self._rt.hub.cluster_status()
        if status.object_reconstruction and self._lineage is None:
            # A cluster started with it: this process keeps lineage from its first task on.
            with self._lock:
                if self._lineage is None:
                    self._lineage = Lineage(self._rt, self, Config.model_fields["lineage_max_bytes"].default)
        # A draining node (`actorhub drain`) takes no new leases.
        nodes = {n.node_id: n.num_cpus for n in status.nodes if n.alive and not n.draining}
        resources = {n.node_id: dict(n.resources) for n in status.nodes if n.alive and n.resources}
        # What placement ranks nodes by besides this submitter's own leases (tasks/task_placement.py).
        reserved = {n.node_id: n.num_cpus - n.available_cpus for n in status.nodes if n.alive}
        addresses = {n.address: n.node_id for n in status.nodes if n.alive}
        with self._lock:
            self._state.reserved, self._state.node_of_address = reserved, addresses
            revived = self._state.nodes_seen(nodes, resources)
        for pool in revived:  # tasks that no node fitted, and one does now
            self._request_lease(pool)
        if any(waiting and in_group(pool[3]) for pool, waiting in list(self._state.ready_pools.items())):
            self._fail_removed_groups(status)
        return status

    def _fail_removed_groups(self, status: ClusterStatus) -> None:
        """Queued tasks of a placement group the hub no longer has fail, as in Ray."""
        gone = removed_groups(self._rt, status.placement_groups)
        with self._lock:
            doomed = self._state.take_ready(lambda pool: gone(pool[3]))
        for task in doomed:
            self._finish(task, error=system_error(
                f"task {task.name} cannot run: its placement group was removed", ErrorKind.PLACEMENT_GROUP_REMOVED))

    def _group_removed(self, task: Task) -> bool:
        """Whether the group a task that failed ran in is gone (its desk kills what runs in a
        removed group: tasks/removed_group_leases.py). If the hub cannot tell now, it is not."""
        try:
            return removed_groups(self._rt, self._refresh_nodes().placement_groups)(task.pool[3])
        except RpcFailedError:
            return False

    def _end_in_removed_group(self, task: Task, lease: Lease, outcome: Outcome) -> None:
        """Not run again: its lease goes back (its claim names the group's resources, gone) and it
        fails as in Ray (its worker was destroyed; a retry finds the group removed)."""
        with self._lock:
            release = not lease.lost
            self._state.lease_lost(lease)
        if release and not self._rt.closed:
            self._desk_handle(lease.node).release.remote(lease.executor.actor_id, lease.broken)
        why = "its placement group was removed while it ran, which destroyed its worker"
        if outcome is Outcome.CRASHED:
            self._finish(task, error=system_error(f"the worker running task {task.name} died: {why} (max_retries="
                                                  f"{task.options.max_retries})", ErrorKind.WORKER_CRASHED))
        else:
            self._finish(task, error=system_error(f"task {task.name} cannot run again: {why}",
                                                  ErrorKind.PLACEMENT_GROUP_REMOVED))

    def _try_refresh_nodes(self) -> bool:
        """Refresh the view of the nodes; False (the view as it was) if the hub is away."""
        try:
            self._refresh_nodes()
        except RpcFailedError:
            return False
        return True

    def _node_gone(self, node: str) -> bool:
        # If the hub cannot tell now, the task is retried where it was.
        return self._try_refresh_nodes() and node not in self._state.nodes

    # -- leases going back -----------------------------------------------------------------------
    def _return_idle_leases(self) -> None:
        while not self._closed.wait(LINGER_S / 2):
            now = self._clock()
            with self._lock:
                old = self._state.expired_leases(now)
            for lease in old:
                if self._rt.closed:
                    return
                self._desk_handle(lease.node).release.remote(lease.executor.actor_id, lease.broken)
            if self._state.nodes_stale(now) and not self._rt.closed:
                self._try_refresh_nodes()  # nodes that joined or died since
            if not self._rt.closed:
                self._demand.tick()

    def _backlog(self) -> list[Demand]:
        with self._lock:
            ready = {pool: n for pool, n in self._state.ready_pools.items() if n > 0}
        return backlog_demands(ready, task_placement.pinned_node)

    def close(self) -> None:
        self._closed.set()
        if self._lineage is not None:
            self._lineage.close()
        with self._lock:
            idle = self._state.take_idle()
        if idle:
            refs = [
                self._desk_handle(lease.node).release.remote(lease.executor.actor_id, lease.broken)
                for lease in idle
            ]
            try:
                self._rt.get(refs, 2.0)
            except Exception:
                pass  # the desk reclaims leases of holders that went away
