"""The records the actor table holds, the decisions it hands back, and the texts it writes.

Split from `_actor_table` so that the state machine reads on its own; nothing here locks or
does I/O.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import ActorHubError
from actorhub.hub.resources import GpuSlots
from actorhub.wire.errors import ErrorKind, system_error_info

PENDING = common_pb2.ACTOR_STATE_PENDING
ALIVE = common_pb2.ACTOR_STATE_ALIVE
RESTARTING = common_pb2.ACTOR_STATE_RESTARTING
DEAD = common_pb2.ACTOR_STATE_DEAD


class ActorTableError(ActorHubError):
    """A request the actor table refuses; the service maps each subclass to a gRPC status."""


class UnknownActor(ActorTableError, LookupError):
    pass


class UnknownNode(ActorTableError, LookupError):
    pass


class UnknownJob(ActorTableError, LookupError):
    pass


class NameTaken(ActorTableError):
    pass


class DuplicateActorId(ActorTableError):
    pass


class InvalidSpec(ActorTableError, ValueError):
    pass


class HubShuttingDown(ActorTableError):
    pass


@dataclass
class ActorRecord:
    spec: common_pb2.ActorSpec
    state: common_pb2.ActorState = PENDING
    incarnation: int = 0
    address: str = ""
    node_id: str = ""
    worker_id: str = ""
    pid: int = 0
    num_restarts: int = 0
    # With ActorSpec.restart_window_s: when its restarts happened, within the window (this hub's
    # clock; a restarted hub starts the window afresh).
    restart_times: deque[float] = field(default_factory=deque)
    death_cause: common_pb2.ErrorInfo | None = None
    kill_requested: bool = False
    # The full death message to use once the kill completes: kill() and an owner's death
    # word it differently.
    kill_message: str = ""
    # A StartActor call for (node_id, incarnation) is in flight.
    placing: bool = False
    # CPUs held on `reserved_on` from placement until the process is gone.
    reserved_on: str = ""
    reserved_cpus: float = 0.0
    # Its other resources (ActorSpec.resources) held there too, and the GPUs they are.
    reserved_resources: dict[str, float] = field(default_factory=dict)
    gpu_ids: list[int] = field(default_factory=list)
    # A pending actor that would fit on this node once its tasks give their CPUs back: the
    # node's desk lends no more of them meanwhile, so the actor does not wait forever.
    waiting_on: str = ""
    # node_id -> clock time until which placement avoids that node (it failed a StartActor).
    avoid: dict[str, float] = field(default_factory=dict)
    first_failure: float | None = None
    # A worker exit reported while StartActor was still in flight; applied once it returns.
    early_exit: str = ""
    # Why it waits for a node (PENDING or RESTARTING, not placed), as its last placement
    # attempt found; and whether no alive node could fit it at all.
    pending_reason: str = ""
    infeasible: bool = False
    version: int = 0
    # The spec changed since the store last wrote it (a dead actor's class and arguments dropped).
    spec_dirty: bool = False

    @property
    def actor_id(self) -> str:
        return self.spec.actor_id

    @property
    def label(self) -> str:
        return f"{self.spec.class_name} ({self.spec.actor_id})"


@dataclass
class NodeRecord:
    node_id: str
    address: str
    num_cpus: float
    available_cpus: float
    pid: int
    order: int
    generation: int
    alive: bool = True
    # A drain (hub/node_drain.py): nothing new is placed here; once it ends the node is removed
    # (`drained`: not alive, and not failed).
    draining: bool = False
    drained: bool = False
    actors: int = 0
    # CPUs the node's lease desk lends to tasks, as it last reported. Actors that reserve CPUs
    # are placed only in what is left, as Ray's one count of a node's CPUs would have it.
    lent_cpus: float = 0.0
    # Besides CPUs, what the desk lends (taken out of `available`, its GPUs out of `gpus`, by
    # hub/task_loans.py): the hub grants these to the desk, so actors and tasks never share a GPU.
    lent_resources: dict[str, float] = field(default_factory=dict)
    lent_gpus: dict[int, float] = field(default_factory=dict)
    # GPUs of placement groups' bundles lent to tasks, by (group, bundle, GPU id) (hub/bundle_gpus.py).
    lent_bundle_gpus: dict[tuple[str, int, int], float] = field(default_factory=dict)
    # Besides CPUs (hub/resources.py): in all, not held by actors, and which GPUs are free.
    resources: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    gpus: GpuSlots = field(default_factory=lambda: GpuSlots(0))

    def load(self) -> tuple[float, int, int]:
        used = (self.num_cpus - self.available_cpus) / self.num_cpus if self.num_cpus > 0 else 0.0
        return (used, self.actors, self.order)


@dataclass
class JobRecord:
    job_id: str
    namespace: str
    driver_pid: int
    driver_address: str
    owns_cluster: bool
    alive: bool = True


@dataclass(frozen=True)
class HubInfo:
    """This hub process, as `actorhub status` shows it."""

    started_at: float = 0.0  # Unix time
    restarts: int = 0  # hubs started on this store before this one
    store_path: str = ""
    object_reconstruction: bool = False  # started with --enable-object-reconstruction: told to every process


@dataclass(frozen=True)
class HostedActor:
    """An actor's worker as a node agent reports it when it registers again (a hub restart)."""

    actor_id: str
    incarnation: int
    address: str = ""
    worker_id: str = ""
    pid: int = 0
    starting: bool = False  # its constructor still runs
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Run this incarnation of the actor on this node (NodeStub.StartActor)."""

    actor_id: str
    incarnation: int
    spec: common_pb2.ActorSpec
    node_id: str
    node_address: str
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class WorkerKill:
    """Kill this incarnation's worker (NodeStub.KillWorker), then report it gone."""

    actor_id: str
    incarnation: int
    node_id: str
    node_address: str


@dataclass
class Decisions:
    """What the service must do after a table operation, outside the table's lock."""

    placements: list[Placement] = field(default_factory=list)
    kills: list[WorkerKill] = field(default_factory=list)
    # Re-run schedule_pending() after this many seconds (a node is being avoided for a while).
    retry_after: float | None = None
    shutdown_cluster: bool = False

    def merge(self, other: Decisions) -> None:
        self.placements.extend(other.placements)
        self.kills.extend(other.kills)
        if other.retry_after is not None:
            mine = self.retry_after
            self.retry_after = other.retry_after if mine is None else min(mine, other.retry_after)
        self.shutdown_cluster = self.shutdown_cluster or other.shutdown_cluster

    def __bool__(self) -> bool:
        return bool(self.placements or self.kills or self.retry_after is not None or self.shutdown_cluster)


@dataclass(frozen=True)
class KillPlan:
    """The worker KillActor must kill and wait for (None: nothing runs), what else follows, and
    the cause to report once the worker is gone when the actor may restart."""

    target: WorkerKill | None
    decisions: Decisions
    cause: str = ""


@dataclass(frozen=True)
class JobRegistration:
    job_id: str
    namespace: str
    node_id: str


def exit_cause(pid: int, exit_code: int, signum: int) -> str:
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown signal"
        return f"its worker process (pid {pid}) was killed by signal {signum} ({name})"
    return f"its worker process (pid {pid}) exited with code {exit_code}"


def died(rec: ActorRecord, cause: str) -> common_pb2.ErrorInfo:
    return system_error_info(f"The actor {rec.label} died: {cause}", ErrorKind.ACTOR_DIED)


def killed_message(rec: ActorRecord) -> str:
    return f"The actor {rec.label} was killed by kill()"


def out_of_restarts(rec: ActorRecord, cause: str) -> common_pb2.ErrorInfo:
    limit, window = rec.spec.max_restarts, rec.spec.restart_window_s
    if limit > 0 and window > 0:
        suffix = f" ({limit} restarts within the last {window:g} s already, max_restarts={limit} per restart_window_s)"
    else:
        suffix = f" (no restarts left, max_restarts={limit})" if limit > 0 else ""
    return died(rec, cause + suffix)


def constructor_failed(rec: ActorRecord, error: common_pb2.ErrorInfo) -> common_pb2.ErrorInfo:
    cause = common_pb2.ErrorInfo()
    cause.CopyFrom(error)
    if error.kind == common_pb2.ERROR_KIND_RUNTIME_ENV_SETUP:
        # Its callers get RuntimeEnvSetupError, as in Ray, with the node's reason (pip's output).
        cause.message = f"The actor {rec.label} died: its runtime_env could not be set up: {error.message}"
        return cause
    cause.kind = common_pb2.ERROR_KIND_ACTOR_DIED
    # A node that could not even start a worker sends a system error without a type name.
    if error.type_name:
        raised = f"its constructor raised {error.type_name}: {error.message}"
    else:
        raised = error.message or "its worker could not be started"
    cause.message = f"The actor {rec.label} died: {raised}"
    return cause


def actor_info(rec: ActorRecord) -> common_pb2.ActorInfo:
    spec = rec.spec
    info = common_pb2.ActorInfo(
        actor_id=spec.actor_id,
        state=rec.state,
        address=rec.address,
        incarnation=rec.incarnation,
        name=spec.name,
        namespace=spec.namespace,
        class_name=spec.class_name,
        node_id=rec.node_id,
        pid=rec.pid,
        methods=spec.methods,
        detached=spec.detached,
        max_task_retries=spec.max_task_retries,
        max_pending_calls=spec.max_pending_calls,
        num_restarts=rec.num_restarts,
        owner_job_id=spec.owner_job_id,
        is_async=spec.is_async,
        pending_reason=rec.pending_reason,
        infeasible=rec.infeasible,
        concurrency_groups=spec.concurrency_groups,
    )
    if rec.death_cause is not None:
        info.death_cause.CopyFrom(rec.death_cause)
    return info
