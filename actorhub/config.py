"""Configuration: one frozen model, read at the process edge and passed explicitly.

Values come from explicit arguments first, then ``ACTORHUB_*`` environment variables, then
the defaults below. Nothing deeper in the code reads the environment.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actorhub.exceptions import ActorHubError

ENV_PREFIX = "ACTORHUB_"


class ConfigError(ActorHubError, ValueError):
    """A configuration value is invalid; the message names the field."""


class RpcDeadlines(BaseModel):
    """How long each class of RPC may take before its caller gets a typed error.

    Every RPC a client sends has one of these as its deadline, so a peer that stopped (SIGSTOP,
    a hung host) fails the call instead of hanging it. The defaults are above what each call
    legitimately takes today; set them per process with ``ACTORHUB_DEADLINES_<FIELD>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    control_s: float = Field(default=30.0, gt=0)
    """Hub lookups, listings and reports (GetNamedActor, ListActors, GetClusterStatus...): the
    hub answers them from memory."""
    create_actor_s: float = Field(default=30.0, gt=0)
    """CreateActor: the hub records the actor and queues its placement; it does not wait for
    the constructor."""
    kill_s: float = Field(default=45.0, gt=0)
    """KillActor: the hub waits for the node to SIGKILL and reap the worker (its own KillWorker
    call allows 30 s), then persists the record."""
    actor_start_s: float = Field(default=86_400.0, gt=0)
    """StartActor (hub to node, node to worker): the user's constructor runs inside it and may
    take long (loading a model); KillWorker interrupts it. A day: a bound, not a timeout."""
    store_s: float = Field(default=60.0, gt=0)
    """Object-store bookkeeping (Reserve, Seal, Release, Delete, List): a reserve may spill
    objects to disk to make room first."""
    fetch_s: float = Field(default=600.0, gt=0)
    """Reading objects: OpenObject may restore a spilled object or wait for a concurrent
    pull's seal; PullObject and ReadObject copy a whole object (gigabytes) between nodes."""
    owner_s: float = Field(default=10.0, gt=0)
    """Calls to an object's owner (AddBorrowers, RemoveBorrowers, ListOwnedObjects,
    HeldStoreIds) and node bookkeeping between peers."""
    ping_s: float = Field(default=2.0, gt=0)
    """Liveness pings: a peer that does not answer in this long counts as gone."""
    long_poll_margin_s: float = Field(default=10.0, gt=0)
    """Long polls (WaitActor, GetObject) carry their wait in the request; their deadline is
    that wait plus this margin."""
    unavailable_retry_s: float = Field(default=2.0, ge=0)
    """How long idempotent calls retry a peer that is UNAVAILABLE (a reconnecting channel)
    before reporting it unreachable. Short: a dead peer must still be reported promptly."""


# The largest message a process sends or accepts, unless configured (Config.max_message_bytes).
# Large values travel through the object store, so only a huge inline value comes near it.
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
# gRPC's own ceiling: message lengths are signed 32-bit.
MAX_MESSAGE_BYTES_LIMIT = 2**31 - 1


def default_session_root() -> Path:
    return Path(tempfile.gettempdir()) / f"actorhub-{os.getuid()}"


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    session_root: Path = Field(default_factory=default_session_root)
    """Where session directories are made; `latest` in it names the newest session."""
    bind_host: str = "127.0.0.1"
    """Local clusters listen on loopback only."""
    num_cpus: float | None = Field(default=None, ge=0)
    """CPUs a node offers; None: os.cpu_count()."""
    num_gpus: int = Field(default=0, ge=0)
    """GPUs a node offers, ids 0..n-1: declared, not detected (nothing checks the hardware)."""
    memory: int | None = Field(default=None, ge=0)
    """Bytes of the "memory" resource a node offers; None: the machine's available memory less
    the object store's."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources a node offers (`--resources '{"x86": 1}'`)."""
    prestart_workers: int = Field(default=2, ge=0)
    """Idle workers a node keeps forked and ready, so actor creation does not wait for a fork."""
    logging_level: str = "WARNING"
    hub_port: int = Field(default=0, ge=0, le=65535)
    """0: pick a free port."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """How long init() waits for the cluster to come up or answer."""
    kill_grace_s: float = Field(default=5.0, gt=0)
    object_store_memory: int | None = Field(default=None, gt=0)
    """Bytes of shared memory a node's object store may use; None: 30% of the machine's memory."""
    lost_result_grace_s: float = Field(default=10.0, gt=0)
    """How long after a callee that stored a result dies its caller is asked whether the reply
    naming it arrived; a result it never learned of is then freed."""
    tracing_startup_hook: str | None = None
    """"module:function" run at the start of every worker to set OpenTelemetry tracing up."""
    checkpoint_dir: Path | None = None
    """ACTORHUB_CHECKPOINT_DIR: a directory every node shares where actors' checkpoints go
    (large state); None: through the hub, beside its store (worker/checkpoints.py)."""
    otlp_endpoint: str | None = None
    """ACTORHUB_OTLP_ENDPOINT (e.g. http://127.0.0.1:4317): every process exports its spans there
    over OTLP/gRPC (runtime/tracing.py)."""
    token: str | None = None
    """The cluster token (ACTORHUB_TOKEN): a head given one uses it instead of generating one;
    nodes and drivers on other hosts join with it."""
    token_file: Path | None = None
    """A file holding the cluster token, instead of ACTORHUB_TOKEN (`--token-file`)."""
    node_ip_address: str | None = None
    """The address this host's servers bind and advertise to the other hosts (`--node-ip-address`);
    None: 127.0.0.1 for a local cluster, the address that routes to the hub for a joining one."""
    tls_cert: Path | None = None
    """This process's certificate (PEM) for mutual TLS on every channel; with tls_key and tls_ca."""
    tls_key: Path | None = None
    """The private key (PEM) of tls_cert."""
    tls_ca: Path | None = None
    """The CA (PEM) every peer's certificate is verified against."""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=64 * 1024, le=MAX_MESSAGE_BYTES_LIMIT)
    """The largest gRPC message a process sends or accepts. A call whose arguments or result
    are larger fails at the side that would send it with `MessageTooLargeError`; values that
    large should travel as objects (`put`), which have no such limit."""
    hub_store_path: Path | None = None
    """The hub's durable store (SQLite); None: control.sqlite3 in the session directory. Put it
    on a persistent volume to keep a cluster's actors and names across a whole restart."""
    hub_reconnect_timeout_s: float = Field(default=60.0, gt=0)
    """How long node agents, workers and drivers keep going without the hub (it crashed and its
    supervisor restarts it) while they reconnect; a node agent that has not reached it by then
    stops. Operations that need the hub wait for it within their own deadlines meanwhile."""
    deadlines: RpcDeadlines = Field(default_factory=RpcDeadlines)
    """Deadlines of RPCs, by class (ACTORHUB_DEADLINES_<FIELD>, e.g. ACTORHUB_DEADLINES_KILL_S)."""
    log_to_driver: bool = True
    """A driver prints the output (stdout, stderr) of its job's actors and tasks (`init(log_to_driver=)`)."""
    dedup_logs: bool = True
    """Ray's log deduplication at the driver (RAY_DEDUP_LOGS): a line that other workers repeat within
    `dedup_logs_agg_window_s` prints once, then with `[repeated Nx across cluster]`; ACTORHUB_DEDUP_LOGS=0: off."""
    dedup_logs_agg_window_s: float = Field(default=5.0, gt=0)
    """How long repeats of a line are counted before the count is printed."""
    dedup_logs_allow_regex: str | None = None
    """Lines that match this regular expression are never deduplicated."""
    dedup_logs_skip_regex: str | None = None
    """Lines that match this regular expression are not printed at the driver at all."""
    job_runtime_env: dict[str, Any] | None = None
    """The job's default runtime_env (`init(runtime_env=)`, or the JobConfig's); tasks and actors
    that set none of their own use it. ACTORHUB_JOB_RUNTIME_ENV (JSON) is how the dashboard hands a
    submitted job's runtime_env to its driver."""
    include_dashboard: bool = False
    """Start the dashboard (the Job API's HTTP server) with a head (`actorhub start --head` turns it
    on unless `--include-dashboard false`; `init(include_dashboard=True)` for a local cluster)."""
    dashboard_host: str = "127.0.0.1"
    """The address the dashboard binds (`--dashboard-host`); 0.0.0.0 for every interface."""
    dashboard_port: int | None = Field(default=None, ge=0, le=65535)
    """The dashboard's port (`--dashboard-port`); None: 8265, or one of the next 50 when it is taken."""
    metrics_export_port: int = Field(default=0, ge=0, le=65535)
    """The port of a node's Prometheus endpoint (`--metrics-export-port`, as Ray's); 0: a free one."""
    enable_object_reconstruction: bool = False
    """Lineage reconstruction (`init(enable_object_reconstruction=True)`, `actorhub start
    --enable-object-reconstruction`): a task's result lost with its node is made again by running
    the task again at the next get(). A cluster started with it tells every process (tasks/lineage.py)."""
    pin_io_threads: bool = True
    """Each process keeps its event loop's thread and gRPC's poller thread on one CPU, which makes
    small calls much faster where idle CPUs sleep (wire/io_affinity.py); ACTORHUB_PIN_IO_THREADS=0: off."""
    lineage_max_bytes: int = Field(default=1 << 30, ge=0)
    """The most bytes of task specs (arguments, mostly) a process keeps to make lost results
    again (Ray's max_lineage_bytes); past it the oldest are dropped, and their results, once lost,
    raise ObjectReconstructionFailedLineageEvictedError."""

    @field_validator("dedup_logs_allow_regex", "dedup_logs_skip_regex")
    @classmethod
    def _a_regex(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return value

    @field_validator("job_runtime_env", mode="before")
    @classmethod
    def _runtime_env_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # ACTORHUB_JOB_RUNTIME_ENV: JSON
            try:
                return json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"job_runtime_env must be a JSON object: {e}") from None
        return value

    @field_validator("resources", mode="before")
    @classmethod
    def _custom_resources(cls, value: Any) -> dict[str, float]:
        from actorhub.hub.resources import check_custom

        if isinstance(value, str):  # --resources and ACTORHUB_RESOURCES: JSON
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"resources must be a JSON object such as '{{\"x86\": 1}}': {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"resources must be a mapping of names to amounts, not {type(value).__name__}")
        return check_custom(value)

    @model_validator(mode="after")
    def _tls_all_or_none(self) -> Config:
        given = [name for name in ("tls_cert", "tls_key", "tls_ca") if getattr(self, name) is not None]
        if given and len(given) != 3:
            missing = sorted({"tls_cert", "tls_key", "tls_ca"} - set(given))
            raise ValueError(f"TLS needs tls_cert, tls_key and tls_ca together; {', '.join(missing)} not given")
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Arguments first (None means "not given"), then ACTORHUB_* variables, then defaults."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env is not None and env != "":
                values[name] = env
        deadlines = {
            name: env
            for name in RpcDeadlines.model_fields
            if (env := os.environ.get(f"{ENV_PREFIX}DEADLINES_{name.upper()}"))
        }
        if deadlines:
            values["deadlines"] = deadlines
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(f"invalid actorhub configuration: {e}") from None
