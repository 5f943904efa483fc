"""The Hub gRPC service: the actor table's networking half.

Handlers ask the table for a decision under its lock, then carry it out here with the lock
released: StartActor and KillWorker calls to node agents run on thread pools, and what they
return is fed back to the table. Leases and long polls each hold one server thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.control_store import ControlStore
from actorhub.hub.records import (
    Decisions,
    DuplicateActorId,
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
from actorhub.wire.node import NodeClient
from actorhub.wire.transport import ChannelPool

log = logging.getLogger("actorhub.hub")

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
# How long a registered job may take to open its lease before its driver is taken as dead.
_LEASE_ARRIVAL_S = 10.0


def _describe(err: RpcFailedError) -> str:
    code = err.code.name if err.code is not None else "UNKNOWN"
    return f"{code}: {err.details}"


class HubServicer(hub_pb2_grpc.HubServicer):
    def __init__(
        self,
        table: ActorTable,
        store: ControlStore | None,
        channels: ChannelPool,
        on_stop: Callable[[], None],
        deadlines: RpcDeadlines | None = None,
    ) -> None:
        """`on_stop` is called (once, from a timer thread) when the server should stop."""
        self._deadlines = deadlines or RpcDeadlines()
        self._table = table
        self._store = store
        self._channels = channels
        self._on_stop = on_stop
        # Constructors may run long and each StartActor holds a thread for its duration; kills
        # get their own pool so that slow constructors never delay them.
        self._start_pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="hub-start")
        self._control_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="hub-control")
        self._pool_lock = threading.Lock()
        self._closed = False
        self._leases_lock = threading.Lock()
        self._leases: set[threading.Event] = set()
        self._leased_jobs: set[str] = set()
        self._node_clients: dict[str, NodeClient] = {}
        self._retry_lock = threading.Lock()
        self._retry_at = float("inf")
        self._stopping = threading.Event()

    # ---- nodes and jobs ----------------------------------------------------------------

    def RegisterNode(
        self, request: hub_pb2.RegisterNodeRequest, context: grpc.ServicerContext
    ) -> hub_pb2.RegisterNodeReply:
        log.info("node %s registered at %s with %s CPUs (pid %d)",
                 request.node_id, request.address, request.num_cpus, request.pid)
        self._carry_out(self._table.register_node(
            request.node_id, request.address, request.num_cpus, request.pid))
        return hub_pb2.RegisterNodeReply()

    def NodeLease(
        self, request: hub_pb2.LeaseRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.LeaseEvent]:
        try:
            generation = self._table.lease_node(request.id)
        except UnknownNode as err:
            self._abort(context, err)
        if self._hold_lease(context):
            yield hub_pb2.LeaseEvent(shutdown=True)
            return
        log.warning("node %s lost its lease: taking it as dead", request.id)
        self._carry_out(self._table.node_died(request.id, generation))

    def RegisterJob(
        self, request: hub_pb2.RegisterJobRequest, context: grpc.ServicerContext
    ) -> hub_pb2.RegisterJobReply:
        try:
            job = self._table.register_job(
                request.namespace, request.driver_pid, request.driver_address, request.owns_cluster)
        except HubShuttingDown as err:
            self._abort(context, err)
        self._persist()
        log.info("job %s registered in namespace %s (driver pid %d)",
                 job.job_id, job.namespace, request.driver_pid)
        # A driver killed between RegisterJob and its lease reaching us would hold its job
        # open forever; a job whose lease has not arrived in time has ended.
        timer = threading.Timer(_LEASE_ARRIVAL_S, self._end_job_without_lease, args=(job.job_id,))
        timer.daemon = True
        timer.start()
        return hub_pb2.RegisterJobReply(job_id=job.job_id, namespace=job.namespace, node_id=job.node_id)

    def JobLease(
        self, request: hub_pb2.LeaseRequest, context: grpc.ServicerContext
    ) -> Iterator[hub_pb2.LeaseEvent]:
        try:
            self._table.check_job(request.id)
        except UnknownJob as err:
            self._abort(context, err)
        job_id = request.id
        ended = threading.Event()

        def broken() -> None:
            # gRPC calls this when the stream ends, even when it has given up on this generator
            # (a driver killed while its acknowledgement was being sent): the job's end must
            # hang on this, not on code after a yield. It runs on gRPC's thread: hand it over.
            ended.set()
            if not self._table.shutting_down:
                threading.Thread(target=self._end_job, args=(job_id,), name="hub-job-end", daemon=True).start()

        with self._leases_lock:
            self._leased_jobs.add(job_id)
            self._leases.add(ended)
        try:
            if not context.add_callback(broken):
                broken()  # the driver is already gone
                return
            # The acknowledgement: init() returns only once it has it, so from then on the
            # driver's death always ends its job.
            yield hub_pb2.LeaseEvent(shutdown=False)
            ended.wait()
        finally:
            with self._leases_lock:
                self._leases.discard(ended)
        if self._table.shutting_down:
            yield hub_pb2.LeaseEvent(shutdown=True)

    def _end_job_without_lease(self, job_id: str) -> None:
        with self._leases_lock:
            if job_id in self._leased_jobs:
                return
        log.warning("job %s never opened its lease: taking its driver as dead", job_id)
        self._end_job(job_id)

    def _end_job(self, job_id: str) -> None:
        log.info("job %s ended", job_id)
        decisions = self._table.job_ended(job_id)
        if not decisions.shutdown_cluster:
            self._carry_out(decisions)
            return
        self._persist()
        # The owner's actors go first, so that their deaths are recorded as the job's doing.
        kills = [self._submit(self._control_pool, partial(self._kill_and_report, k), k)
                 for k in decisions.kills]
        deadline = time.monotonic() + _OWNER_KILL_WAIT_S
        for done in kills:
            done.wait(max(0.0, deadline - time.monotonic()))
        log.info("job %s owned the cluster: shutting it down", job_id)
        self.shutdown_cluster()

    def _hold_lease(self, context: grpc.ServicerContext) -> bool:
        """Block until the holder goes away (False) or the hub shuts down (True)."""
        ended = threading.Event()
        with self._leases_lock:
            if self._table.shutting_down:
                return True
            self._leases.add(ended)
        try:
            if not context.add_callback(ended.set):
                ended.set()  # the RPC had already ended
            ended.wait()
        finally:
            with self._leases_lock:
                self._leases.discard(ended)
        return self._table.shutting_down

    # ---- actors ------------------------------------------------------------------------

    def CreateActor(
        self, request: hub_pb2.CreateActorRequest, context: grpc.ServicerContext
    ) -> hub_pb2.CreateActorReply:
        try:
            info, existed, decisions = self._table.create_actor(request.spec, request.get_if_exists)
        except _TABLE_ERRORS as err:
            self._abort(context, err)
        self._carry_out(decisions)
        return hub_pb2.CreateActorReply(actor=info, existed=existed)

    def WaitActor(
        self, request: hub_pb2.WaitActorRequest, context: grpc.ServicerContext
    ) -> common_pb2.ActorInfo:
        try:
            return self._table.wait_actor(
                request.actor_id, request.min_incarnation, request.timeout_s, context.is_active)
        except _TABLE_ERRORS as err:
            self._abort(context, err)

    def GetNamedActor(
        self, request: hub_pb2.GetNamedActorRequest, context: grpc.ServicerContext
    ) -> common_pb2.ActorInfo:
        info = self._table.named_actor(request.name, request.namespace)
        if info is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no actor named '{request.name}' in namespace '{request.namespace}'")
        return info

    def ListActors(
        self, request: hub_pb2.ListActorsRequest, context: grpc.ServicerContext
    ) -> hub_pb2.ListActorsReply:
        return hub_pb2.ListActorsReply(actors=self._table.list_actors(
            request.namespace, request.all_namespaces, request.named_only, request.include_dead))

    def KillActor(
        self, request: hub_pb2.KillActorRequest, context: grpc.ServicerContext
    ) -> common_pb2.Empty:
        try:
            plan = self._table.request_kill(request.actor_id, request.no_restart)
        except UnknownActor as err:
            self._abort(context, err)
        self._carry_out(plan.decisions)
        target = plan.target
        if target is not None:
            # The node also reports this exit; whichever arrives second finds it stale.
            self._kill_worker(target)
            self._carry_out(self._table.worker_exited(
                target.actor_id, target.incarnation, plan.cause, target.node_id))
        return common_pb2.Empty()

    def ReportWorkerExit(
        self, request: hub_pb2.WorkerExitReport, context: grpc.ServicerContext
    ) -> common_pb2.Empty:
        cause = exit_cause(request.pid, request.exit_code, request.signal)
        self._carry_out(self._table.worker_exited(
            request.actor_id, request.incarnation, cause, request.node_id))
        return common_pb2.Empty()

    def GetClusterStatus(
        self, request: common_pb2.Empty, context: grpc.ServicerContext
    ) -> hub_pb2.ClusterStatus:
        return self._table.cluster_status()

    def ReportLentCpus(self, request: hub_pb2.LentCpus, context: grpc.ServicerContext) -> hub_pb2.ActorCpus:
        decisions, reserved, wanted = self._table.report_lent(request.node_id, request.lent)
        if decisions.placements or decisions.retry_after is not None:
            self._carry_out(decisions)  # persisting the table on every report would cost more
        return hub_pb2.ActorCpus(reserved=reserved, wanted=wanted)

    def Shutdown(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> common_pb2.Empty:
        self.shutdown_cluster()
        return common_pb2.Empty()

    # ---- shutdown ----------------------------------------------------------------------

    def shutdown_cluster(self) -> None:
        """Stop every node agent, end leases and long polls, then ask for the server's stop.
        Idempotent; also the SIGTERM path."""
        addresses = self._table.begin_shutdown()
        if addresses is None:
            return
        log.info("shutting down the cluster (%d nodes)", len(addresses))
        with self._leases_lock:
            for lease in self._leases:
                lease.set()
        # One thread per node rather than the pools: those may be full of slow calls.
        threads = [threading.Thread(target=self._stop_node, args=(a,), daemon=True,
                                    name="hub-node-shutdown") for a in addresses]
        for t in threads:
            t.start()
        for t in threads:
            t.join(_NODE_SHUTDOWN_TIMEOUT_S + 1.0)
        self._persist()
        timer = threading.Timer(_STOP_DELAY_S, self._request_stop)
        timer.daemon = True
        timer.start()

    def _stop_node(self, address: str) -> None:
        try:
            self._node(address).shutdown(_NODE_SHUTDOWN_TIMEOUT_S)
        except RpcFailedError as err:
            log.info("node at %s did not answer Shutdown (%s); it may be gone already",
                     address, _describe(err))

    def _request_stop(self) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            self._on_stop()

    def close(self) -> None:
        """After the server stopped: cancel node calls still in flight and release the pools."""
        with self._pool_lock:
            self._closed = True
        self._channels.close()  # in-flight StartActor calls end with CANCELLED
        self._start_pool.shutdown(wait=False, cancel_futures=True)
        self._control_pool.shutdown(wait=False, cancel_futures=True)
        self._persist()

    # ---- carrying out decisions --------------------------------------------------------

    def _carry_out(self, decisions: Decisions) -> None:
        self._persist()
        for placement in decisions.placements:
            self._submit(self._start_pool, partial(self._start_actor, placement), placement)
        for kill in decisions.kills:
            self._submit(self._control_pool, partial(self._kill_and_report, kill), kill)
        if decisions.retry_after is not None:
            self._retry_later(decisions.retry_after)
        if decisions.shutdown_cluster:
            self._submit_thread(self.shutdown_cluster)

    def _start_actor(self, placement: Placement) -> None:
        try:
            # The constructor runs inside this call and may take long (actor_start_s).
            reply = self._node(placement.node_address).start_actor(placement.spec, placement.incarnation)
        except RpcFailedError as err:
            error = f"StartActor on node {placement.node_id} ({placement.node_address}) failed: " \
                    f"{_describe(err)}"
            log.warning("actor %s: %s", placement.actor_id, error)
            decisions = self._table.start_failed(placement, error)
        else:
            decisions = self._table.start_finished(placement, reply)
        self._carry_out(decisions)

    def _kill_worker(self, kill: WorkerKill) -> None:
        if not kill.node_address:
            return
        try:
            self._node(kill.node_address).kill_worker(kill.actor_id, kill.incarnation, _KILL_TIMEOUT_S)
        except RpcFailedError as err:
            # Unreachable node: its lease breaks too, and the node's death covers this worker.
            log.warning("KillWorker(%s, incarnation %d) on node %s failed: %s",
                        kill.actor_id, kill.incarnation, kill.node_id, _describe(err))

    def _kill_and_report(self, kill: WorkerKill) -> None:
        self._kill_worker(kill)
        # Only a record still waiting for this kill changes; for an orphan this is stale.
        self._carry_out(self._table.worker_exited(
            kill.actor_id, kill.incarnation, "its worker process was killed", kill.node_id))

    def _retry_later(self, delay: float) -> None:
        due = time.monotonic() + delay
        with self._retry_lock:
            if self._retry_at <= due:
                return
            self._retry_at = due
        timer = threading.Timer(delay, self._retry_pending)
        timer.daemon = True
        timer.start()

    def _retry_pending(self) -> None:
        with self._retry_lock:
            self._retry_at = float("inf")
        self._carry_out(self._table.schedule_pending())

    def _submit(self, pool: Executor, fn: Callable[[], None], what: object) -> threading.Event:
        """Run fn on the pool, logging what it raises; the event is set when it is done."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            except Exception:
                # A bug, not a node failure (those are handled inside): keep the hub serving.
                log.exception("hub background call failed: %r", what)
            finally:
                done.set()

        with self._pool_lock:
            if self._closed:
                done.set()
            else:
                pool.submit(run)
        return done

    def _submit_thread(self, fn: Callable[[], None]) -> None:
        threading.Thread(target=fn, daemon=True, name="hub-shutdown").start()

    def _persist(self) -> None:
        actors, jobs = self._table.take_dirty()
        if self._store is None or not (actors or jobs):
            return
        try:
            self._store.save_actors(actors)
            self._store.save_jobs(jobs)
        except (sqlite3.Error, OSError):
            # The store is a copy; losing a write must not fail the cluster's operation.
            log.exception("could not persist %d actor and %d job records", len(actors), len(jobs))

    def _node(self, address: str) -> NodeClient:
        client = self._node_clients.get(address)
        if client is None:
            client = self._node_clients[address] = NodeClient(self._channels, address, self._deadlines)
        return client

    @staticmethod
    def _abort(context: grpc.ServicerContext, err: Exception) -> NoReturn:
        context.abort(_STATUS.get(type(err), grpc.StatusCode.INTERNAL), str(err))
