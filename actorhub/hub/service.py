"""The Hub gRPC service: the actor table's networking half, on gRPC's asyncio server.

Every handler is a coroutine on the hub's one event loop (`wire.server.ServerLoop`). Handlers
ask the table for a decision under its lock (quick, inline on the loop), then carry it out
here with the lock released: StartActor and KillWorker calls to node agents are tasks awaited
on the loop (`AsyncNodeClient`), and what they return is fed back to the table. Nothing holds a
thread while it waits: a lease is a coroutine waiting for the hub's shutdown or its RPC's end,
a long poll (WaitActor) a future the table wakes when the actor's record changes, a StartActor
a task that awaits the node's reply however long the constructor takes, and the timers (retry
pending actors, a job's lease arrival) are the loop's.

Changed records go to the control store through its writer thread (`StoreWriter`), and an RPC
that made a decision (CreateActor, KillActor, RegisterJob, RegisterNode) answers only once it
is on disk, as StartActor and KillWorker calls to nodes go out only then: a hub restarted from
the store never forgets what it told anyone. A restarted hub (`recover`) gives the nodes and
drivers of its store a grace period to reconnect (`hub/recovery.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any, NoReturn, cast

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.autoscaler_demand import AutoscalerRpcs, DemandBoard
from actorhub.hub.checkpoint_service import CheckpointRpcs
from actorhub.hub.control_store import StoreWriter
from actorhub.hub.health import NodeHealth
from actorhub.hub.log_fanout import LogFanout
from actorhub.hub.metrics_export import HubMetrics
from actorhub.hub.node_drain import NodeDrainRpcs
from actorhub.hub.placement_group_service import PlacementGroupRpcs
from actorhub.hub.records import (
    Decisions,
    DuplicateActorId,
    HostedActor,
    HubInfo,
    HubShuttingDown,
    InvalidSpec,
    NameTaken,
    Placement,
    UnknownActor,
    UnknownJob,
    UnknownNode,
    WorkerKill,
    exit_cause,
)
from actorhub.wire.node import AsyncNodeClient
from actorhub.wire.server import abort
from actorhub.wire.transport import AsyncChannelPool

log = logging.getLogger("actorhub.hub")

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS: dict[type[Exception], grpc.StatusCode] = {
    UnknownActor: grpc.StatusCode.NOT_FOUND,
    UnknownNode: grpc.StatusCode.NOT_FOUND,
    UnknownJob: grpc.StatusCode.NOT_FOUND,
    NameTaken: grpc.StatusCode.ALREADY_EXISTS,
    DuplicateActorId: grpc.StatusCode.ALREADY_EXISTS,
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    HubShuttingDown: grpc.StatusCode.UNAVAILABLE,
}
_TABLE_ERRORS = tuple(_STATUS)

# KillWorker returns once the process is gone; a node that takes longer than this is stuck.
_KILL_TIMEOUT_S = 30.0
_NODE_SHUTDOWN_TIMEOUT_S = 5.0
# Stop the server only after the Shutdown reply has had time to leave.
_STOP_DELAY_S = 0.1
# How long an owns_cluster job's end waits for its actors' kills before stopping the nodes.
_OWNER_KILL_WAIT_S = 10.0
# How long a registered job may take to open its lease before its driver is taken as dead;
# also how long a restarted hub waits for the nodes and drivers of its store to reconnect.
_LEASE_ARRIVAL_S = 10.0


def _describe(err: RpcFailedError) -> str:
    code = err.code.name if err.code is not None else "UNKNOWN"
    return f"{code}: {err.details}"


def _resolve(woke: asyncio.Future[None]) -> None:
    if not woke.done():
        woke.set_result(None)


class _Lease:
    """One open lease stream. `on_break` runs once when it ends other than by the hub's
    shutdown: its holder (a driver or a node agent) is taken as dead."""

    __slots__ = ("kind", "lease_id", "on_break", "over")

    def __init__(self, kind: str, lease_id: str, on_break: Callable[[], None]) -> None:
        self.kind = kind
        self.lease_id = lease_id
        self.on_break = on_break
        self.over = False


class HubServicer(AutoscalerRpcs, PlacementGroupRpcs, CheckpointRpcs, NodeDrainRpcs, hub_pb2_grpc.HubServicer):
    def __init__(
        self,
        table: ActorTable,
        store: StoreWriter | None,
        channels: AsyncChannelPool,
        loop: asyncio.AbstractEventLoop,
        on_stop: Callable[[], None],
        deadlines: RpcDeadlines | None = None,
        info: HubInfo | None = None,
    ) -> None:
        """Serves on `loop` (the server's); `channels` is used only there. `on_stop` is called
        once, on the loop, when the server should stop."""
        self._deadlines = deadlines or RpcDeadlines()
        self._info = info or HubInfo(started_at=time.time())
        self._table = table
        self._store = store
        self._channels = channels
        self._loop = loop
        self._on_stop = on_stop
        # Everything below is touched only on the loop.
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: set[_Lease] = set()
        self._leased_jobs: set[str] = set()
        self._leased_nodes: set[tuple[str, int]] = set()
        self._shutdown = asyncio.Event()
        self._node_clients: dict[str, AsyncNodeClient] = {}
        self._retry_at = float("inf")
        self._stop_requested = False
        self.health = NodeHealth(table.alive_nodes, self._node, self._deadlines.ping_s)
        self.metrics: HubMetrics | None = None  # its Prometheus endpoint (hub/metrics_export.py), once serving
        self._logs = LogFanout()
        self.autoscaler_demand = DemandBoard()

    def start_health_checks(self) -> None:
        """On the loop, once serving: the nodes' heartbeats (`hub/health.py`)."""
        self._spawn(self.health.run, "node health checks")

    # ---- nodes and jobs ----------------------------------------------------------------

    async def RegisterNode(self, request: hub_pb2.RegisterNodeRequest, context: Context) -> hub_pb2.RegisterNodeReply:
        hosted = [HostedActor(a.actor_id, a.incarnation, a.address, a.worker_id, a.pid, a.starting, tuple(a.gpu_ids))
                  for a in request.actors] if request.reconnect else None
        log.info("node %s %sregistered at %s with %s CPUs (pid %d)%s", request.node_id,
                 "re" if request.reconnect else "", request.address, request.num_cpus, request.pid,
                 f", hosting {len(hosted)} actors" if hosted is not None else "")
        await self._written(self._carry_out(self._table.register_node(
            request.node_id, request.address, request.num_cpus, request.pid, hosted, dict(request.resources))))
        self.health.beat(request.node_id)
        if self.metrics is not None:
            self.metrics.node_registered(request.node_id, request.metrics_export_port)
        # As for jobs: a node agent that registered and never opened its lease (killed in
        # between, or not a node agent at all) would stay "alive" and be sent actors.
        generation = self._table.lease_node(request.node_id)
        self._loop.call_later(_LEASE_ARRIVAL_S, self._end_node_without_lease, request.node_id, generation)
        return hub_pb2.RegisterNodeReply()

    def _end_node_without_lease(self, node_id: str, generation: int) -> None:
        if (node_id, generation) in self._leased_nodes:
            return
        log.warning("node %s never opened its lease: taking it as dead", node_id)
        self._carry_out(self._table.node_died(node_id, generation))

    async def NodeLease(self, request: hub_pb2.LeaseRequest, context: Context) -> AsyncIterator[hub_pb2.LeaseEvent]:
        try:
            generation = self._table.lease_node(request.id)
        except UnknownNode as err:
            await self._abort(context, err)
        node_id = request.id
        self._leased_nodes.add((node_id, generation))

        def broken() -> None:
            log.warning("node %s lost its lease: taking it as dead", node_id)
            self._carry_out(self._table.node_died(node_id, generation))

        async for event in self._hold_lease(_Lease("node", node_id, broken), context, ack=False):
            yield event

    async def RegisterJob(self, request: hub_pb2.RegisterJobRequest, context: Context) -> hub_pb2.RegisterJobReply:
        try:
            job = self._table.register_job(
                request.namespace, request.driver_pid, request.driver_address, request.owns_cluster)
        except HubShuttingDown as err:
            await self._abort(context, err)
        await self._written(self._persist())  # its id must never be handed out again
        log.info("job %s registered in namespace %s (driver pid %d)",
                 job.job_id, job.namespace, request.driver_pid)
        # A driver killed between RegisterJob and its lease reaching us would hold its job
        # open forever; a job whose lease has not arrived in time has ended.
        self._loop.call_later(_LEASE_ARRIVAL_S, self._end_job_without_lease, job.job_id)
        return hub_pb2.RegisterJobReply(job_id=job.job_id, namespace=job.namespace, node_id=job.node_id)

    async def JobLease(self, request: hub_pb2.LeaseRequest, context: Context) -> AsyncIterator[hub_pb2.LeaseEvent]:
        try:
            self._table.check_job(request.id)
        except UnknownJob as err:
            await self._abort(context, err)
        job_id = request.id
        self._leased_jobs.add(job_id)

        def broken() -> None:
            self._spawn(partial(self._end_job, job_id), f"end of job {job_id}")

        lease = _Lease("job", job_id, broken)
        # The acknowledgement: init() returns only once it has it, so from then on the
        # driver's death always ends its job.
        async for event in self._hold_lease(lease, context, ack=True):
            yield event

    async def _hold_lease(self, lease: _Lease, context: Context, ack: bool) -> AsyncIterator[hub_pb2.LeaseEvent]:
        """The lease's events: the acknowledgement (`ack`), then, once the hub shuts down,
        `shutdown=True`. The holder going away (its RPC cancelled or ended) breaks the lease.

        The break hangs on the RPC's done callback, which gRPC runs however the stream ended
        (even when it gave up on this generator, say a driver killed while its acknowledgement
        was being written), and on this generator's end; whichever comes first acts."""
        self._leases.add(lease)

        def on_done(_context: object) -> None:
            self._lease_ended(lease)

        # The stubs type the callback as a class of their own; gRPC calls it with the context.
        context.add_done_callback(cast(Any, on_done))
        try:
            if ack:
                yield hub_pb2.LeaseEvent(shutdown=False)
            if not self._table.shutting_down:
                await self._shutdown.wait()
            yield hub_pb2.LeaseEvent(shutdown=True)
        finally:
            self._lease_ended(lease)

    def _lease_ended(self, lease: _Lease) -> None:
        if lease.over:
            return
        lease.over = True
        self._leases.discard(lease)
        if not self._table.shutting_down and not self._closed:
            lease.on_break()

    def _end_job_without_lease(self, job_id: str) -> None:
        if job_id in self._leased_jobs:
            return
        log.warning("job %s never opened its lease: taking its driver as dead", job_id)
        self._spawn(partial(self._end_job, job_id), f"end of job {job_id}")

    async def _end_job(self, job_id: str) -> None:
        log.info("job %s ended", job_id)
        decisions = self._table.job_ended(job_id)
        if not decisions.shutdown_cluster:
            self._carry_out(decisions)
            return
        self._persist()
        # The owner's actors go first, so that their deaths are recorded as the job's doing.
        kills = [self._spawn(partial(self._kill_and_report, k, "its worker process was killed"), k)
                 for k in decisions.kills]
        pending = [k for k in kills if k is not None]
        if pending:
            await asyncio.wait(pending, timeout=_OWNER_KILL_WAIT_S)
        log.info("job %s owned the cluster: shutting it down", job_id)
        await self.shutdown_cluster()

    # ---- actors ------------------------------------------------------------------------

    async def CreateActor(self, request: hub_pb2.CreateActorRequest, context: Context) -> hub_pb2.CreateActorReply:
        try:
            info, existed, decisions = self._table.create_actor(request.spec, request.get_if_exists)
        except _TABLE_ERRORS as err:
            await self._abort(context, err)
        await self._written(self._carry_out(decisions))
        return hub_pb2.CreateActorReply(actor=info, existed=existed)

    async def WaitActor(self, request: hub_pb2.WaitActorRequest, context: Context) -> common_pb2.ActorInfo:
        """A long poll without a thread: a future the table resolves at the record's next change.
        The RPC's end (the caller gave up) cancels this coroutine, which drops its watch."""
        loop = self._loop
        deadline = loop.time() + request.timeout_s if request.timeout_s > 0 else None
        while True:
            woke: asyncio.Future[None] = loop.create_future()
            try:
                info, watch = self._table.watch_actor(
                    request.actor_id, request.min_incarnation, partial(self._wake_soon, woke))
            except _TABLE_ERRORS as err:
                await self._abort(context, err)
            if watch is None:
                return info
            try:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return info
                await asyncio.wait((woke,), timeout=remaining)
            finally:
                self._table.unwatch(watch)

    def _wake_soon(self, woke: asyncio.Future[None]) -> None:
        """A table waker (called under its lock, on any thread): resolve the future on the loop."""
        try:
            self._loop.call_soon_threadsafe(_resolve, woke)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    async def GetNamedActor(self, request: hub_pb2.GetNamedActorRequest, context: Context) -> common_pb2.ActorInfo:
        info = self._table.named_actor(request.name, request.namespace)
        if info is None:
            await abort(context, grpc.StatusCode.NOT_FOUND,
                                f"no actor named '{request.name}' in namespace '{request.namespace}'")
        return info

    async def ListActors(self, request: hub_pb2.ListActorsRequest, context: Context) -> hub_pb2.ListActorsReply:
        return hub_pb2.ListActorsReply(actors=self._table.list_actors(
            request.namespace, request.all_namespaces, request.named_only, request.include_dead))

    async def KillActor(self, request: hub_pb2.KillActorRequest, context: Context) -> common_pb2.Empty:
        try:
            incarnation = request.incarnation if request.HasField("incarnation") else None
            plan = self._table.request_kill(request.actor_id, request.no_restart, incarnation, request.exit_reason)
        except UnknownActor as err:
            await self._abort(context, err)
        # On disk before the worker dies: a hub restarted in between must not restart it.
        await self._written(self._carry_out(plan.decisions))
        target = plan.target
        if target is not None:
            # The node also reports this exit; whichever arrives second finds it stale. A task
            # of its own, shielded: a caller that gives up does not stop the kill halfway.
            kill = self._spawn(partial(self._kill_and_report, target, plan.cause), target)
            if kill is not None:
                await asyncio.shield(kill)
        return common_pb2.Empty()

    async def ReportWorkerExit(self, request: hub_pb2.WorkerExitReport, context: Context) -> common_pb2.Empty:
        cause = exit_cause(request.pid, request.exit_code, request.signal)
        self._carry_out(self._table.worker_exited(
            request.actor_id, request.incarnation, cause, request.node_id))
        return common_pb2.Empty()

    async def GetClusterStatus(self, request: common_pb2.Empty, context: Context) -> hub_pb2.ClusterStatus:
        status = self._table.cluster_status()
        self.health.stamp(status)
        status.hub_started_at = self._info.started_at
        status.hub_restarts = self._info.restarts
        status.store_path = self._info.store_path
        status.object_reconstruction = self._info.object_reconstruction
        if self.metrics is not None:
            self.metrics.stamp(status)
        return status

    async def ReportLentCpus(self, request: hub_pb2.LentCpus, context: Context) -> hub_pb2.ActorCpus:
        decisions, reserved, wanted, claim = self._table.report_loans(request.node_id, request.lent,
            request.lent_resources, request.lent_gpus, request.claim, request.lent_bundle_gpus)
        if decisions.placements or decisions.retry_after is not None:
            self._carry_out(decisions)  # persisting the table on every report would cost more
        return hub_pb2.ActorCpus(reserved=reserved, wanted=wanted, claim_granted=claim.granted,
                                 claim_gpu_ids=claim.gpu_ids, node_resources=claim.node_resources,
                                 claim_bundle_index=claim.bundle_index)

    async def Shutdown(self, request: common_pb2.Empty, context: Context) -> common_pb2.Empty:
        await self.shutdown_cluster()
        return common_pb2.Empty()

    # ---- workers' output (hub/log_fanout.py) -------------------------------------------

    async def PublishLogs(self, request: hub_pb2.LogBatch, context: Context) -> common_pb2.Empty:
        self._logs.publish(request)
        return common_pb2.Empty()

    async def SubscribeLogs(
        self, request: hub_pb2.LogSubscribeRequest, context: Context,
    ) -> AsyncIterator[hub_pb2.LogBatch]:
        try:
            self._table.check_job(request.job_id)  # a job the hub does not know never gets a line
        except UnknownJob as err:
            await self._abort(context, err)
        async for batch in self._logs.follow(request.job_id, self._shutdown):
            yield batch

    # ---- shutdown ----------------------------------------------------------------------

    async def shutdown_cluster(self) -> None:
        """Stop every node agent, end leases and long polls, then ask for the server's stop.
        Idempotent; also the SIGTERM path (`request_shutdown`)."""
        addresses = self._table.begin_shutdown()  # wakes every long poll
        if addresses is None:
            return
        log.info("shutting down the cluster (%d nodes)", len(addresses))
        self._shutdown.set()
        await asyncio.gather(*(self._stop_node(a) for a in addresses))
        self._persist()
        self._loop.call_later(_STOP_DELAY_S, self._request_stop)

    def request_shutdown(self) -> None:
        """shutdown_cluster from any thread (a signal handler), without waiting for it."""
        self._loop.call_soon_threadsafe(self._spawn, self.shutdown_cluster, "shutdown")

    async def _stop_node(self, address: str) -> None:
        try:
            await self._node(address).shutdown(_NODE_SHUTDOWN_TIMEOUT_S)
        except RpcFailedError as err:
            log.info("node at %s did not answer Shutdown (%s); it may be gone already",
                     address, _describe(err))

    def _request_stop(self) -> None:
        if not self._stop_requested:
            self._stop_requested = True
            self._on_stop()

    async def close(self) -> None:
        """On the loop, after the server stopped: cancel node calls still in flight (StartActor
        of constructors still running), close the channels, hand the table's last changes to the
        store's writer."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await self._channels.close()
        self._persist()

    # ---- carrying out decisions --------------------------------------------------------

    def _carry_out(self, decisions: Decisions) -> int:
        """On the loop: persist, then start what the decisions ask for as tasks, each once the
        store has the decision. The store's ticket, for an RPC to answer once it is written."""
        ticket = self._persist()
        for placement in decisions.placements:
            self._spawn(partial(self._start_actor, placement, ticket), placement)
        for kill in decisions.kills:
            self._spawn(partial(self._kill_and_report, kill, "its worker process was killed", ticket), kill)
        if decisions.retry_after is not None:
            self._retry_later(decisions.retry_after)
        if decisions.shutdown_cluster:
            self._spawn(self.shutdown_cluster, "shutdown")
        return ticket

    async def _start_actor(self, placement: Placement, ticket: int = 0) -> None:
        await self._written(ticket)
        try:
            # The constructor runs inside this call and may take long (actor_start_s).
            reply = await self._node(placement.node_address).start_actor(
                placement.spec, placement.incarnation, placement.gpu_ids)
        except RpcFailedError as err:
            error = f"StartActor on node {placement.node_id} ({placement.node_address}) failed: " \
                    f"{_describe(err)}"
            log.warning("actor %s: %s", placement.actor_id, error)
            decisions = self._table.start_failed(placement, error)
        else:
            decisions = self._table.start_finished(placement, reply)
        self._carry_out(decisions)

    async def _kill_worker(self, kill: WorkerKill) -> None:
        if not kill.node_address:
            return
        try:
            await self._node(kill.node_address).kill_worker(kill.actor_id, kill.incarnation, _KILL_TIMEOUT_S)
        except RpcFailedError as err:
            # Unreachable node: its lease breaks too, and the node's death covers this worker.
            log.warning("KillWorker(%s, incarnation %d) on node %s failed: %s",
                        kill.actor_id, kill.incarnation, kill.node_id, _describe(err))

    async def _kill_and_report(self, kill: WorkerKill, cause: str, ticket: int = 0) -> None:
        await self._written(ticket)
        await self._kill_worker(kill)
        # Only a record still waiting for this kill changes; for an orphan this is stale.
        self._carry_out(self._table.worker_exited(kill.actor_id, kill.incarnation, cause, kill.node_id))

    def _retry_later(self, delay: float) -> None:
        due = self._loop.time() + delay
        if self._retry_at <= due:
            return
        self._retry_at = due
        self._loop.call_later(delay, self._retry_pending)

    def _retry_pending(self) -> None:
        self._retry_at = float("inf")
        self._carry_out(self._table.schedule_pending())

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, None]], what: object) -> asyncio.Task[None] | None:
        """Run make() as a task on the loop, logging what it raises; None once closed."""
        if self._closed:
            return None
        task = self._loop.create_task(make())
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, what))
        return task

    def _task_done(self, what: object, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            # A bug, not a node failure (those are handled inside): keep the hub serving.
            log.error("hub background call failed: %r", what, exc_info=err)

    def _persist(self) -> int:
        """Hand what changed to the store's writer thread: the loop never waits on the disk.
        The ticket to await (`_written`) for it to be on disk."""
        batch = self._table.take_dirty()
        return self._store.save(batch) if self._store is not None else 0

    async def _written(self, ticket: int) -> None:
        """Once the store has committed everything up to `ticket`."""
        if self._store is None or ticket <= 0:
            return
        written: asyncio.Future[None] = self._loop.create_future()
        self._store.when_written(ticket, partial(self._wake_soon, written))
        await written

    # ---- a restarted hub ---------------------------------------------------------------

    def recover(self, decisions: Decisions, nodes: list[tuple[str, int]], jobs: list[str]) -> None:
        """On the loop, once serving, for a hub that restored its table from the store: carry out
        what the restore decided, and take the nodes and drivers that do not reconnect within
        the grace period as dead (their leases never came back)."""
        if nodes or jobs:
            log.info("recovering: waiting up to %.0f s for %d nodes and %d drivers to reconnect",
                     _LEASE_ARRIVAL_S, len(nodes), len(jobs))
        for node_id, generation in nodes:
            self._loop.call_later(_LEASE_ARRIVAL_S, self._end_node_without_lease, node_id, generation)
        for job_id in jobs:
            self._loop.call_later(_LEASE_ARRIVAL_S, self._end_job_without_lease, job_id)
        self._carry_out(decisions)

    def _node(self, address: str) -> AsyncNodeClient:
        client = self._node_clients.get(address)
        if client is None:
            client = self._node_clients[address] = AsyncNodeClient(self._channels, address, self._deadlines)
        return client

    @property
    def open_leases(self) -> int:
        return len(self._leases)

    @staticmethod
    async def _abort(context: Context, err: Exception) -> NoReturn:
        await abort(context, _STATUS.get(type(err), grpc.StatusCode.INTERNAL), str(err))
