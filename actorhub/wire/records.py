"""What the hub's client takes and returns: actor specs and records, the cluster's status.

Plain frozen dataclasses, so code above the client layer never touches a generated message;
`wire/hub.py` converts them to and from the hub's protos. The hub's server side keeps its own
records (`hub/records.py`): these are the view a caller gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorhub.wire.placement_groups import PlacementGroupState


@dataclass(frozen=True)
class MethodInfo:
    """What a caller needs to know about an actor method without having the class.

    Also what a handle carries per method (api/actor_handle.py), so one record serves the hub's
    spec and reply and the handle alike, with nothing to convert between them.
    """

    name: str
    num_returns: int = 1
    is_async: bool = False
    concurrency_group: str = ""
    """The group `@method(concurrency_group=...)` put it in; "" for the default group."""
    generator: str = ""
    """"streaming" or "dynamic" for a generator method whose items stream (then it returns an
    ObjectRefGenerator, or one ref; `num_returns` is unused); "" for any other method."""
    signature: str = ""
    """Its parameters, for checking a call's arguments at the caller (api/arg_checks.py's text
    form); "" when there is nothing to check."""
    typed: bytes = b""
    """A typed actor's method: its parameters and type hints, pickled (api/typed.py); b"" if not."""


@dataclass(frozen=True)
class ActorSpec:
    """Everything the hub needs to create, and re-create on any node, an actor (CreateActor)."""

    actor_id: str
    class_name: str
    pickled_class: bytes
    init_args: bytes
    """The serialized (args, kwargs) of the constructor."""
    name: str
    """"" for an anonymous actor."""
    namespace: str
    detached: bool
    max_restarts: int
    """-1: without limit."""
    max_task_retries: int
    """-1: without limit."""
    max_concurrency: int
    """0: the default (1, or 1000 for an async actor)."""
    max_pending_calls: int
    """-1: without limit."""
    num_cpus: float
    owner_job_id: str
    owner_actor_id: str
    """"" when the owner is the job's driver."""
    job_namespace: str
    """The namespace the owner's job runs in."""
    methods: tuple[MethodInfo, ...]
    is_async: bool
    hub_address: str
    node_id: str
    """Placement on this node only; "" for any node."""
    concurrency_groups: tuple[tuple[str, int], ...] = ()
    """Named concurrency groups and their sizes (`concurrency_groups=` of `@remote`)."""
    runtime_env: str = ""
    """The resolved runtime_env as canonical JSON (actorhub/runtime_env/spec.py); "" for none."""
    resources: tuple[tuple[str, float], ...] = ()
    """What it asks for besides CPUs: "GPU", "memory", custom names."""
    placement_cpus: float = 0.0
    """CPUs its node must have in all, not held: 1 for an actor that asks for nothing, as in Ray."""
    spread: bool = False
    """scheduling_strategy="SPREAD": round-robin over the nodes that fit it."""
    node_affinity_soft: bool = False
    """`node_id` is a preference (NodeAffinitySchedulingStrategy(soft=True)), not a rule."""
    spill_on_unavailable: bool = False
    """Soft affinity: another node instead of waiting while `node_id` is busy."""
    fail_on_unavailable: bool = False
    """Hard affinity: unschedulable instead of waiting while `node_id` is busy."""
    caller_node_id: str = ""
    """The creator's node, which "DEFAULT" prefers."""
    placement_group_id: str = ""
    """The placement group it runs in ("": none); `resources` already name its bundle's resources."""
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool = False
    trace_context: tuple[tuple[str, str], ...] = ()
    restart_window_s: float = 0.0
    checkpoint_every_calls: int = 0
    checkpoint_every_s: float = 0.0
    """> 0: at most max_restarts restarts in any window of this many seconds; 0: for its life."""
    """The W3C trace context of its creation (empty when not traced)."""


@dataclass(frozen=True)
class ActorInfo:
    """The hub's record of an actor, as GetNamedActor, CreateActor and ListActors answer."""

    actor_id: str
    class_name: str
    name: str
    namespace: str
    state: str
    """The state's name: "PENDING", "ALIVE", "RESTARTING" or "DEAD" ("UNSPECIFIED" if unset)."""
    incarnation: int
    """0 for the first process, +1 per restart."""
    address: str
    """The worker's Worker service, when ALIVE."""
    node_id: str
    pid: int
    num_restarts: int
    death_cause: str
    """Why the actor died, when DEAD; "" otherwise."""
    methods: tuple[MethodInfo, ...]
    detached: bool
    max_task_retries: int
    max_pending_calls: int
    owner_job_id: str
    is_async: bool
    pending_reason: str = ""
    """Why a PENDING or RESTARTING actor is not placed yet ("infeasible: requires {CPU: 64} but
    no node has that many (largest: 2.0 CPUs)", "waiting for resources: ..."); "" otherwise."""
    infeasible: bool = False
    """No alive node could fit it as the cluster is now; a node joining that fits it takes it."""
    concurrency_groups: tuple[str, ...] = ()
    """The names of its concurrency groups, sorted."""


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    address: str
    num_cpus: float
    available_cpus: float
    """The CPUs actors placed on the node do not reserve (tasks' leases are not counted)."""
    alive: bool
    pid: int
    last_heartbeat: float = 0.0
    """Unix time the node last answered the hub's health check; 0: not since the hub started."""
    resources: tuple[tuple[str, float], ...] = ()
    """Besides CPUs: "GPU", "memory", custom names, in all."""
    available_resources: tuple[tuple[str, float], ...] = ()
    """Of `resources`, what actors placed on the node do not hold."""
    metrics_export_port: int = 0
    """Its Prometheus endpoint, on the host of `address` (actorhub/metrics/); 0: none."""
    draining: bool = False
    """Being drained (`actorhub drain`): nothing new is placed there."""
    drained: bool = False
    """Removed by a drain: not alive, and not failed."""


@dataclass(frozen=True)
class ClusterStatus:
    nodes: tuple[NodeStatus, ...]
    """Every node the hub has known, alive or dead."""
    actors: tuple[ActorInfo, ...]
    """The live actors (the hub leaves dead ones out)."""
    live_jobs: int
    driver_addresses: tuple[str, ...]
    """Of the live jobs: owners of objects, as actors are."""
    hub_started_at: float = 0.0
    """Unix time the hub process that answered started serving."""
    hub_restarts: int = 0
    """Times a hub started on this store after the first (crashes its supervisor recovered)."""
    store_path: str = ""
    """The hub's durable store (SQLite)."""
    object_reconstruction: bool = False
    """The cluster was started with lineage reconstruction (tasks/lineage.py)."""
    placement_groups: tuple[PlacementGroupState, ...] = ()
    """The placement groups not removed (hub/placement_groups.py)."""


@dataclass(frozen=True)
class HostedActor:
    """An actor's worker as its node agent knows it, reported when the node registers again
    after losing the hub, so a restarted hub can reconcile its table with what really runs."""

    actor_id: str
    incarnation: int
    address: str = ""
    """The worker's Worker service; "" while its constructor runs."""
    worker_id: str = ""
    pid: int = 0
    starting: bool = False
    """A StartActor for it is under way (its constructor runs, or it waits for a worker)."""
    gpu_ids: tuple[int, ...] = ()
    """The node's GPUs the hub gave it."""


@dataclass(frozen=True, slots=True)
class OwnedObject:
    """An object a process owns, as `actorhub memory` shows it (Worker.ListOwnedObjects)."""

    object_id: str
    size: int
    """Serialized bytes of an inline value; 0 when the value is in a node's store."""
    where: str
    """"inline", "store", "pending" or "error"."""
    local_refs: int
    borrowers: dict[str, int]
    """Borrower address -> the refs it holds."""
    escaped: bool
    """Pickled outside a call: kept while the owner lives."""
    contained_in: int
    """Values of the owner that hold a ref to it."""
    store_id: str
    """Its id in node stores, when it is in one."""


@dataclass(frozen=True)
class LogLines:
    """Consecutive lines a worker wrote to its stdout or stderr, with whose they are (the node's
    log monitor sends them to the hub, which passes them to the drivers of `job_id`)."""

    job_id: str
    """"": not attributed yet (written before the worker hosted anything): every driver gets them."""
    pid: int
    name: str
    """The actor's class or the task's name; "" for neither."""
    is_stderr: bool
    lines: tuple[str, ...]
    actor_id: str = ""
    """The actor (not sent to drivers: `actorhub logs --actor` reads it from the files)."""
    actor_label: str = ""
    """The actor's own name, for a named actor (files only, as actor_id)."""
