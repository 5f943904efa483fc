"""The client of the hub: every call a process makes to the hub, each with its deadline.

Callers give and get the dataclasses of `wire/records.py`; the protos stay in here. One
exception: `wait_actor` answers the raw ActorInfo, for the call stream's state machine
(`wire/call_stream.py`, `wire/call_state.py`), which reads it inside the client layer.

The hub may be away for a while: it crashed and its supervisor restarts it, reloading its
state. Operations that are safe to repeat wait for it within their deadlines; what fails for
want of it raises ControlPlaneUnavailableError. A driver's job lease (`JobLease`) is reopened
when it breaks; a node agent's is its own (node/agent.py), as it must register again first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import ControlPlaneDeadlineError, ControlPlaneUnavailableError, RpcFailedError
from actorhub.wire.checkpoints import CheckpointCalls
from actorhub.wire.node_drain import NodeDrainCalls
from actorhub.wire.placement_groups import PlacementGroupCalls, group_state
from actorhub.wire.records import ActorInfo, ActorSpec, ClusterStatus, HostedActor, MethodInfo, NodeStatus
from actorhub.wire.rpc import (
    ALREADY_EXISTS,
    DEADLINE_EXCEEDED,
    GONE_CODES,
    NOT_FOUND,
    Client,
    Peer,
    ServerStream,
    unary,
)
from actorhub.wire.stream_loop import LoopServerStream, StreamLoop
from actorhub.wire.transport import ChannelPool

R = TypeVar("R")

log = logging.getLogger(__name__)

# Reopening a lease after it broke: the first pause, doubled per failure up to the last.
LEASE_RETRY_FIRST_S = 0.05
LEASE_RETRY_MAX_S = 1.0


@dataclass(frozen=True)
class JobRegistration:
    job_id: str
    namespace: str
    node_id: str
    """The node on the driver's machine; "" when there is none yet."""


@dataclass(frozen=True)
class CpuShare:
    """What actors hold of a node's CPUs, as the hub answers a lease desk's report."""

    reserved: float
    wanted: float
    # A lease's claim of other resources (LentCpus.claim): granted, and the GPU ids it got.
    claim_granted: bool = False
    claim_gpu_ids: tuple[int, ...] = ()
    node_resources: tuple[tuple[str, float], ...] = ()  # the node's totals besides CPUs, now
    claim_bundle_index: int = 0  # a claim of a group's GPUs: the bundle whose ids it got


class HubClient(Client[hub_pb2_grpc.HubStub], PlacementGroupCalls, CheckpointCalls, NodeDrainCalls):
    """`reconnect_s` (Config.hub_reconnect_timeout_s): how long operations that are safe to
    repeat ride out an unreachable hub (its supervisor restarts it within about a second),
    within their own deadlines; deadlines with `unavailable_retry_s=0` (a caller that wants an
    answer now, as the CLI) opt out. Whatever fails for want of the hub raises
    ControlPlaneUnavailableError."""

    def __init__(
        self, channels: ChannelPool, address: str, deadlines: RpcDeadlines, *, reconnect_s: float = 60.0,
        streams: StreamLoop | None = None,
    ) -> None:
        """`streams`: the process's stream loop, where the job lease runs (stream_loop says why)."""
        super().__init__(channels, Peer("hub", address), deadlines, hub_pb2_grpc.HubStub)
        self.reconnect_s = reconnect_s
        self._streams = streams

    def _call(
        self, operation: str, method: Callable[..., R], request: Any, timeout: float, *, repeat: bool,
        wait_for_ready: bool | None = None,
    ) -> R:
        """`method(request)` within `timeout`. `repeat`: safe to send twice, so an UNAVAILABLE
        hub is tried again for min(timeout, reconnect_s) (see _ride_out_s). Otherwise only
        wait_for_ready (when given) waits for a hub that does not accept connections: nothing
        was sent then. A hub still away at the end raises ControlPlaneUnavailableError."""
        start = time.monotonic()
        try:
            return unary(
                self.peer, operation, method, request, timeout,
                retry_unavailable_s=self._ride_out_s(timeout) if repeat else 0.0,
                wait_for_ready=wait_for_ready,
            )
        except RpcFailedError as e:
            if e.code in GONE_CODES:
                raise self._outage(operation, e, time.monotonic() - start, timeout) from None
            raise

    def _ride_out_s(self, timeout: float) -> float:
        if self.deadlines.unavailable_retry_s <= 0:
            return 0.0
        return min(timeout, max(self.reconnect_s, self.deadlines.unavailable_retry_s))

    def _outage(self, operation: str, err: RpcFailedError, waited: float, timeout: float) -> RpcFailedError:
        fields: dict[str, Any] = {
            "peer": str(self.peer), "operation": operation, "code": err.code, "details": err.details,
        }
        if err.code == DEADLINE_EXCEEDED:
            return ControlPlaneDeadlineError(
                f"{operation} to {self.peer} got no answer within {timeout:.1f} s: the control plane is "
                "down or recovering (a hub restarting reloads its state); try again once it is back", **fields,
            )
        return ControlPlaneUnavailableError(
            f"{operation} to {self.peer} failed: the control plane is down or recovering; it was "
            f"unreachable for the {waited:.1f} s this call waited ({err.details}); try again once it is back",
            **fields,
        )

    # -- nodes and jobs -------------------------------------------------------------------------
    def register_node(
        self, node_id: str, address: str, num_cpus: float, pid: int, timeout: float, *,
        reconnect: bool = False, actors: Sequence[HostedActor] = (), resources: Mapping[str, float] | None = None,
        metrics_export_port: int = 0,
    ) -> None:
        """wait_for_ready: the hub may still be starting when the node is. `reconnect`: the
        node registers again after losing the hub, with the actors it hosts."""
        request = hub_pb2.RegisterNodeRequest(
            node_id=node_id, address=address, num_cpus=num_cpus, pid=pid, reconnect=reconnect,
            resources=dict(resources or {}), metrics_export_port=metrics_export_port,
            actors=[
                hub_pb2.HostedActor(
                    actor_id=a.actor_id, incarnation=a.incarnation, address=a.address, worker_id=a.worker_id,
                    pid=a.pid, starting=a.starting, gpu_ids=a.gpu_ids,
                )
                for a in actors
            ],
        )
        self._call("RegisterNode", self._stub().RegisterNode, request, timeout, repeat=True, wait_for_ready=True)

    def node_lease(self, node_id: str) -> ServerStream[hub_pb2.LeaseEvent]:
        """The node's lease: held for the node's life, so no deadline; cancel() ends it."""
        call = self._stub().NodeLease(hub_pb2.LeaseRequest(id=node_id))
        return ServerStream(self.peer, "NodeLease", call, None)

    def register_job(
        self, namespace: str, driver_pid: int, driver_address: str, owns_cluster: bool, timeout: float
    ) -> JobRegistration:
        """wait_for_ready covers a hub that is starting or restarting. Not repeated once sent:
        each call makes a job, and an extra job of a driver that owns the cluster would shut it
        down when its lease never came."""
        request = hub_pb2.RegisterJobRequest(
            namespace=namespace, driver_pid=driver_pid, driver_address=driver_address, owns_cluster=owns_cluster
        )
        reply: hub_pb2.RegisterJobReply = self._call(
            "RegisterJob", self._stub().RegisterJob, request, timeout, repeat=False, wait_for_ready=True
        )
        return JobRegistration(job_id=reply.job_id, namespace=reply.namespace, node_id=reply.node_id)

    def job_lease(self, job_id: str) -> ServerStream[hub_pb2.LeaseEvent]:
        """The job's lease: held for the driver's life, so no deadline; cancel() ends it."""
        request = hub_pb2.LeaseRequest(id=job_id)
        if self._streams is not None:
            return LoopServerStream(self._streams, self.peer, "JobLease",
                                    lambda channel: channel.unary_stream(
                                        "/actorhub.v1.Hub/JobLease",
                                        request_serializer=hub_pb2.LeaseRequest.SerializeToString,
                                        response_deserializer=hub_pb2.LeaseEvent.FromString)(request))
        return ServerStream(self.peer, "JobLease", self._stub().JobLease(request), None)

    def report_worker_exit(
        self, node_id: str, actor_id: str, incarnation: int, pid: int, exit_code: int, signal: int
    ) -> None:
        """One attempt: the node agent retries it itself, with its own pacing (the hub ignores
        a report it already had)."""
        report = hub_pb2.WorkerExitReport(
            node_id=node_id, actor_id=actor_id, incarnation=incarnation, pid=pid, exit_code=exit_code, signal=signal
        )
        self._call("ReportWorkerExit", self._stub().ReportWorkerExit, report, self.deadlines.control_s, repeat=False)

    def report_lent_cpus(
        self, node_id: str, lent: float, lent_resources: Mapping[str, float] | None = None,
        lent_gpus: Mapping[int, float] | None = None, claim: Mapping[str, float] | None = None,
        lent_bundle_gpus: Mapping[tuple[str, int, int], float] | None = None,
    ) -> CpuShare:
        # Repeatable: the report is the absolute amount lent, not a change, and a claim's grant
        # is only kept once the desk reports it as lent.
        request = hub_pb2.LentCpus(node_id=node_id, lent=lent, lent_resources=lent_resources, lent_gpus=lent_gpus,
                                   claim=claim, lent_bundle_gpus=[
                                       hub_pb2.PlacementGroupGpuLoan(placement_group_id=group, bundle_index=index,
                                                                     gpu_id=gpu, amount=amount)
                                       for (group, index, gpu), amount in (lent_bundle_gpus or {}).items()])
        reply: hub_pb2.ActorCpus = self._call(
            "ReportLentCpus", self._stub().ReportLentCpus, request, self.deadlines.control_s, repeat=True,
        )
        return CpuShare(reserved=reply.reserved, wanted=reply.wanted, claim_granted=reply.claim_granted,
                        claim_gpu_ids=tuple(reply.claim_gpu_ids),
                        node_resources=tuple(sorted(reply.node_resources.items())),
                        claim_bundle_index=reply.claim_bundle_index)

    def cluster_status(self, wait_for_ready: bool | None = None) -> ClusterStatus:
        reply: hub_pb2.ClusterStatus = self._call(
            "GetClusterStatus", self._stub().GetClusterStatus, common_pb2.Empty(), self.deadlines.control_s,
            repeat=True, wait_for_ready=wait_for_ready,
        )
        return ClusterStatus(
            nodes=tuple(
                NodeStatus(node_id=n.node_id, address=n.address, num_cpus=n.num_cpus,
                           available_cpus=n.available_cpus, alive=n.alive, pid=n.pid,
                           last_heartbeat=n.last_heartbeat, resources=tuple(sorted(n.resources.items())),
                           available_resources=tuple(sorted(n.available_resources.items())),
                           metrics_export_port=n.metrics_export_port, draining=n.draining, drained=n.drained)
                for n in reply.nodes
            ),
            actors=tuple(_actor_info(a) for a in reply.actors),
            live_jobs=reply.live_jobs,
            driver_addresses=tuple(reply.driver_addresses),
            hub_started_at=reply.hub_started_at,
            hub_restarts=reply.hub_restarts,
            store_path=reply.store_path,
            object_reconstruction=reply.object_reconstruction,
            placement_groups=tuple(group_state(g) for g in reply.placement_groups),
        )

    def shutdown_cluster(self, timeout: float) -> bool:
        """Ask the hub to stop the cluster; False when it did not answer."""
        try:
            unary(self.peer, "Shutdown", self._stub().Shutdown, common_pb2.Empty(), timeout)
        except RpcFailedError:
            return False
        return True

    # -- actors ---------------------------------------------------------------------------------
    def create_actor(self, spec: ActorSpec, get_if_exists: bool) -> ActorInfo:
        """ALREADY_EXISTS (the name is taken) raises ValueError with the hub's explanation.

        Repeatable: the hub answers a CreateActor for an actor id it has, with the same spec,
        with that actor, so a retry after a lost reply never makes the actor twice.
        """
        try:
            reply: hub_pb2.CreateActorReply = self._call(
                "CreateActor", self._stub().CreateActor,
                hub_pb2.CreateActorRequest(spec=_spec_message(spec), get_if_exists=get_if_exists),
                self.deadlines.create_actor_s, repeat=True,
            )
        except RpcFailedError as e:
            if e.code == ALREADY_EXISTS:
                raise ValueError(e.details) from None
            raise
        return _actor_info(reply.actor)

    def actor_info(self, actor_id: str) -> ActorInfo:
        """The actor's record as the hub has it now. NOT_FOUND raises ValueError."""
        return _actor_info(self.wait_actor(actor_id))

    def wait_actor(self, actor_id: str, min_incarnation: int = 0, wait_s: float = 0.001) -> common_pb2.ActorInfo:
        """The actor's record once it is alive at `min_incarnation` or later, or dead, or after
        `wait_s` (a long poll the hub ends itself). NOT_FOUND raises ValueError.

        The raw message, for the call stream in this layer; elsewhere use actor_info."""
        request = hub_pb2.WaitActorRequest(actor_id=actor_id, min_incarnation=min_incarnation, timeout_s=wait_s)
        try:
            info: common_pb2.ActorInfo = self._call(
                "WaitActor", self._stub().WaitActor, request, wait_s + self.deadlines.long_poll_margin_s,
                repeat=True,
            )
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise ValueError(f"no actor {actor_id} in this cluster") from None
            raise
        return info

    def get_named_actor(self, name: str, namespace: str, wait_for_ready: bool | None = None) -> ActorInfo:
        """NOT_FOUND raises ValueError("failed to look up actor ...")."""
        request = hub_pb2.GetNamedActorRequest(name=name, namespace=namespace)
        try:
            info: common_pb2.ActorInfo = self._call(
                "GetNamedActor", self._stub().GetNamedActor, request, self.deadlines.control_s,
                repeat=True, wait_for_ready=wait_for_ready,
            )
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise ValueError(f"failed to look up actor '{name}' in namespace '{namespace}': {e.details}") from None
            raise
        return _actor_info(info)

    def list_actors(
        self, namespace: str, *, all_namespaces: bool = False, named_only: bool = False, include_dead: bool = False
    ) -> list[ActorInfo]:
        request = hub_pb2.ListActorsRequest(
            namespace=namespace, all_namespaces=all_namespaces, named_only=named_only, include_dead=include_dead
        )
        reply: hub_pb2.ListActorsReply = self._call(
            "ListActors", self._stub().ListActors, request, self.deadlines.control_s, repeat=True,
        )
        return [_actor_info(a) for a in reply.actors]

    def kill_actor(
        self, actor_id: str, no_restart: bool, incarnation: int | None = None, exit_reason: str = ""
    ) -> None:
        """Returns once the actor's worker was reaped. NOT_FOUND raises ValueError.

        With no_restart=False only `incarnation` is killed (None: the current one, looked up
        first), so that a retry, which this is, cannot kill the incarnation that replaced it.
        `exit_reason` (with no_restart): the actor ends itself, and this, following "The actor
        <label> ", is its death cause.
        """
        request = hub_pb2.KillActorRequest(actor_id=actor_id, no_restart=no_restart, exit_reason=exit_reason)
        if not no_restart:
            request.incarnation = incarnation if incarnation is not None else self.wait_actor(actor_id).incarnation
        try:
            self._call("KillActor", self._stub().KillActor, request, self.deadlines.kill_s, repeat=True)
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise ValueError(f"no actor {actor_id} in this cluster") from None
            raise


class JobLease:
    """A driver's job lease, held for the driver's life: the hub takes the stream's end for
    the driver's death, and ends the job.

    A lease that breaks while the driver lives (the hub crashed, and its supervisor restarts
    it) is opened again for the same job, with a backoff, for up to the hub client's
    `reconnect_s`; a hub that answers NOT_FOUND ended the job, and is not asked again.
    `open(timeout)` returns once the hub acknowledged the first stream; `cancel()` ends it all.
    """

    def __init__(self, hub: HubClient, job_id: str) -> None:
        self._hub = hub
        self.job_id = job_id
        self._lock = threading.Lock()
        self._stream: ServerStream[hub_pb2.LeaseEvent] | None = None
        self._stopped = threading.Event()
        self._acked = threading.Event()
        self._first_failure: RpcFailedError | None = None

    def open(self, timeout: float) -> None:
        """Raises RpcFailedError when the hub refused the lease or did not acknowledge it in time."""
        threading.Thread(target=self._run, name="actorhub-job-lease", daemon=True).start()
        if not self._acked.wait(timeout) or self._first_failure is not None:
            self.cancel()
            failure = self._first_failure
            if failure is not None:
                raise failure
            raise ControlPlaneUnavailableError(
                f"JobLease to {self._hub.peer} was not acknowledged within {timeout:g} s",
                peer=str(self._hub.peer), operation="JobLease",
            )

    def cancel(self) -> None:
        with self._lock:
            self._stopped.set()
            stream = self._stream
        if stream is not None:
            stream.cancel()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _open_stream(self) -> ServerStream[hub_pb2.LeaseEvent] | None:
        with self._lock:
            if self._stopped.is_set():
                return None
            self._stream = self._hub.job_lease(self.job_id)
            return self._stream

    def _run(self) -> None:
        try:
            self._hold()
        finally:
            if not self._acked.is_set():  # ended before any acknowledgement: open() must not wait on
                if self._first_failure is None:
                    self._first_failure = ControlPlaneUnavailableError(
                        f"JobLease to {self._hub.peer} ended before the hub acknowledged it",
                        peer=str(self._hub.peer), operation="JobLease",
                    )
                self._acked.set()

    def _hold(self) -> None:
        hub, job_id = self._hub.peer, self.job_id
        broken_at: float | None = None
        pause = LEASE_RETRY_FIRST_S
        while (stream := self._open_stream()) is not None:
            try:
                for event in stream:
                    self._acked.set()
                    if broken_at is not None:
                        log.warning("job %s's lease with %s is held again, %.1f s after it broke",
                                    job_id, hub, time.monotonic() - broken_at)
                        broken_at, pause = None, LEASE_RETRY_FIRST_S
                    if event.shutdown:
                        return  # the cluster is stopping: nothing to reconnect to
                return  # the hub ended the lease itself
            except RpcFailedError as e:
                if self._stopped.is_set():
                    return
                if not self._acked.is_set():
                    self._first_failure = e  # open() reports it
                    self._acked.set()
                    return
                if e.code == NOT_FOUND:
                    log.warning("%s no longer knows job %s (it ended the job); its lease is not reopened",
                                hub, job_id)
                    return
                now = time.monotonic()
                if broken_at is None:
                    broken_at = now
                    log.warning("job %s's lease with %s broke (%s); reopening it for up to %g s",
                                job_id, hub, e, self._hub.reconnect_s)
                elif now - broken_at >= self._hub.reconnect_s:
                    log.error("job %s's lease with %s could not be reopened within %g s; giving up "
                              "(the last attempt: %s)", job_id, hub, self._hub.reconnect_s, e)
                    return
                else:
                    log.info("reopening job %s's lease with %s failed (%s); next try in %.2f s",
                             job_id, hub, e.code.name if e.code is not None else "UNKNOWN", pause)
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, LEASE_RETRY_MAX_S)


# -- records to and from the hub's messages ----------------------------------------------------
_STATE_PREFIX = "ACTOR_STATE_"
_STATE_NAMES = {value: name.removeprefix(_STATE_PREFIX) for name, value in common_pb2.ActorState.items()}


def _actor_info(info: common_pb2.ActorInfo) -> ActorInfo:
    return ActorInfo(
        actor_id=info.actor_id,
        class_name=info.class_name,
        name=info.name,
        namespace=info.namespace,
        # A state this version does not know (a newer hub's) shows as its number.
        state=_STATE_NAMES.get(info.state, str(info.state)),
        incarnation=info.incarnation,
        address=info.address,
        node_id=info.node_id,
        pid=info.pid,
        num_restarts=info.num_restarts,
        death_cause=info.death_cause.message,
        methods=tuple(
            MethodInfo(m.name, m.num_returns, m.is_async, m.concurrency_group, m.generator, m.signature, m.typed)
            for m in info.methods
        ),
        detached=info.detached,
        max_task_retries=info.max_task_retries,
        max_pending_calls=info.max_pending_calls,
        owner_job_id=info.owner_job_id,
        is_async=info.is_async,
        pending_reason=info.pending_reason,
        infeasible=info.infeasible,
        concurrency_groups=tuple(sorted(info.concurrency_groups)),
    )


def _spec_message(spec: ActorSpec) -> common_pb2.ActorSpec:
    return common_pb2.ActorSpec(
        actor_id=spec.actor_id,
        class_name=spec.class_name,
        pickled_class=spec.pickled_class,
        init_args=spec.init_args,
        name=spec.name,
        namespace=spec.namespace,
        detached=spec.detached,
        max_restarts=spec.max_restarts,
        max_task_retries=spec.max_task_retries,
        max_concurrency=spec.max_concurrency,
        max_pending_calls=spec.max_pending_calls,
        num_cpus=spec.num_cpus,
        owner_job_id=spec.owner_job_id,
        owner_actor_id=spec.owner_actor_id,
        job_namespace=spec.job_namespace,
        methods=[
            common_pb2.MethodMeta(
                name=m.name, num_returns=m.num_returns, is_async=m.is_async, concurrency_group=m.concurrency_group,
                generator=m.generator, signature=m.signature, typed=m.typed,
            )
            for m in spec.methods
        ],
        concurrency_groups=dict(spec.concurrency_groups),
        is_async=spec.is_async,
        hub_address=spec.hub_address,
        node_id=spec.node_id,
        runtime_env=spec.runtime_env,
        resources=dict(spec.resources),
        placement_cpus=spec.placement_cpus,
        spread=spec.spread,
        node_affinity_soft=spec.node_affinity_soft,
        node_affinity_spill_on_unavailable=spec.spill_on_unavailable,
        node_affinity_fail_on_unavailable=spec.fail_on_unavailable,
        caller_node_id=spec.caller_node_id,
        placement_group_id=spec.placement_group_id,
        placement_group_bundle_index=spec.placement_group_bundle_index,
        placement_group_capture_child_tasks=spec.placement_group_capture_child_tasks,
        trace_context=dict(spec.trace_context),
        restart_window_s=spec.restart_window_s,
        checkpoint_every_calls=spec.checkpoint_every_calls,
        checkpoint_every_s=spec.checkpoint_every_s,
    )
