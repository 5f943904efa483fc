"""The client of the hub: every call a process makes to the hub, each with its deadline.

Callers give and get the dataclasses of `wire/records.py`; the protos stay in here. One
exception: `wait_actor` answers the raw ActorInfo, for the call stream's state machine
(`wire/call_stream.py`, `wire/call_state.py`), which reads it inside the client layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.wire.records import ActorInfo, ActorSpec, ClusterStatus, MethodInfo, NodeStatus
from actorhub.wire.rpc import ALREADY_EXISTS, NOT_FOUND, Client, Peer, ServerStream, unary
from actorhub.wire.transport import ChannelPool


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


class HubClient(Client[hub_pb2_grpc.HubStub]):
    def __init__(self, channels: ChannelPool, address: str, deadlines: RpcDeadlines) -> None:
        super().__init__(channels, Peer("hub", address), deadlines, hub_pb2_grpc.HubStub)


    # -- nodes and jobs -------------------------------------------------------------------------
    def register_node(self, node_id: str, address: str, num_cpus: float, pid: int, timeout: float) -> None:
        """wait_for_ready: the hub may still be starting when the node is."""
        request = hub_pb2.RegisterNodeRequest(node_id=node_id, address=address, num_cpus=num_cpus, pid=pid)
        unary(self.peer, "RegisterNode", self._stub().RegisterNode, request, timeout, wait_for_ready=True)

    def node_lease(self, node_id: str) -> ServerStream[hub_pb2.LeaseEvent]:
        """The node's lease: held for the node's life, so no deadline; cancel() ends it."""
        call = self._stub().NodeLease(hub_pb2.LeaseRequest(id=node_id))
        return ServerStream(self.peer, "NodeLease", call, None)

    def register_job(
        self, namespace: str, driver_pid: int, driver_address: str, owns_cluster: bool, timeout: float
    ) -> JobRegistration:
        """Not retried on UNAVAILABLE (each call makes a job); wait_for_ready covers a hub
        that is still starting."""
        request = hub_pb2.RegisterJobRequest(
            namespace=namespace, driver_pid=driver_pid, driver_address=driver_address, owns_cluster=owns_cluster
        )
        reply: hub_pb2.RegisterJobReply = unary(
            self.peer, "RegisterJob", self._stub().RegisterJob, request, timeout, wait_for_ready=True
        )
        return JobRegistration(job_id=reply.job_id, namespace=reply.namespace, node_id=reply.node_id)

    def job_lease(self, job_id: str) -> ServerStream[hub_pb2.LeaseEvent]:
        """The job's lease: held for the driver's life, so no deadline; cancel() ends it."""
        call = self._stub().JobLease(hub_pb2.LeaseRequest(id=job_id))
        return ServerStream(self.peer, "JobLease", call, None)

    def report_worker_exit(
        self, node_id: str, actor_id: str, incarnation: int, pid: int, exit_code: int, signal: int
    ) -> None:
        """Not retried here: the node agent retries it itself, with its own pacing."""
        report = hub_pb2.WorkerExitReport(
            node_id=node_id, actor_id=actor_id, incarnation=incarnation, pid=pid, exit_code=exit_code, signal=signal
        )
        unary(self.peer, "ReportWorkerExit", self._stub().ReportWorkerExit, report, self.deadlines.control_s)

    def report_lent_cpus(self, node_id: str, lent: float) -> CpuShare:
        # Idempotent: the report is the absolute amount lent, not a change.
        reply: hub_pb2.ActorCpus = unary(
            self.peer, "ReportLentCpus", self._stub().ReportLentCpus,
            hub_pb2.LentCpus(node_id=node_id, lent=lent), self.deadlines.control_s,
            retry_unavailable_s=self._retry_s,
        )
        return CpuShare(reserved=reply.reserved, wanted=reply.wanted)

    def cluster_status(self, wait_for_ready: bool | None = None) -> ClusterStatus:
        reply: hub_pb2.ClusterStatus = unary(
            self.peer, "GetClusterStatus", self._stub().GetClusterStatus, common_pb2.Empty(),
            self.deadlines.control_s, retry_unavailable_s=self._retry_s, wait_for_ready=wait_for_ready,
        )
        return ClusterStatus(
            nodes=tuple(
                NodeStatus(node_id=n.node_id, address=n.address, num_cpus=n.num_cpus,
                           available_cpus=n.available_cpus, alive=n.alive, pid=n.pid)
                for n in reply.nodes
            ),
            actors=tuple(_actor_info(a) for a in reply.actors),
            live_jobs=reply.live_jobs,
            driver_addresses=tuple(reply.driver_addresses),
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

        Retried on UNAVAILABLE only with get_if_exists and a name: then a second call finds the
        actor the first one made; otherwise a retry could make the actor twice.
        """
        retry = self._retry_s if get_if_exists and spec.name else 0.0
        try:
            reply: hub_pb2.CreateActorReply = unary(
                self.peer, "CreateActor", self._stub().CreateActor,
                hub_pb2.CreateActorRequest(spec=_spec_message(spec), get_if_exists=get_if_exists),
                self.deadlines.create_actor_s, retry_unavailable_s=retry,
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
            info: common_pb2.ActorInfo = unary(
                self.peer, "WaitActor", self._stub().WaitActor, request,
                wait_s + self.deadlines.long_poll_margin_s, retry_unavailable_s=self._retry_s,
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
            info: common_pb2.ActorInfo = unary(
                self.peer, "GetNamedActor", self._stub().GetNamedActor, request, self.deadlines.control_s,
                retry_unavailable_s=self._retry_s, wait_for_ready=wait_for_ready,
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
        reply: hub_pb2.ListActorsReply = unary(
            self.peer, "ListActors", self._stub().ListActors, request, self.deadlines.control_s,
            retry_unavailable_s=self._retry_s,
        )
        return [_actor_info(a) for a in reply.actors]

    def kill_actor(self, actor_id: str, no_restart: bool) -> None:
        """Returns once the actor's worker was reaped. NOT_FOUND raises ValueError.

        Never retried: if a first attempt reached the hub before the connection broke, a
        second one (no_restart=False) would kill the incarnation that replaced the first.
        """
        request = hub_pb2.KillActorRequest(actor_id=actor_id, no_restart=no_restart)
        try:
            unary(self.peer, "KillActor", self._stub().KillActor, request, self.deadlines.kill_s)
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise ValueError(f"no actor {actor_id} in this cluster") from None
            raise


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
        methods=tuple(MethodInfo(m.name, m.num_returns, m.is_async) for m in info.methods),
        detached=info.detached,
        max_task_retries=info.max_task_retries,
        max_pending_calls=info.max_pending_calls,
        owner_job_id=info.owner_job_id,
        is_async=info.is_async,
        pending_reason=info.pending_reason,
        infeasible=info.infeasible,
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
            common_pb2.MethodMeta(name=m.name, num_returns=m.num_returns, is_async=m.is_async) for m in spec.methods
        ],
        is_async=spec.is_async,
        hub_address=spec.hub_address,
        node_id=spec.node_id,
    )
