"""The public functions: init, shutdown, get, put, wait, kill (get_actor: namespaces/lookup.py).

Importing this module is cheap (no gRPC, no runtime): `init()` starts the cluster's processes
first and imports the kernel (gRPC, the runtime, the worker service) while they boot, so the
driver's imports overlap theirs. The kernel's names used here (ObjectRef, ActorHandle) are
bound by `_load_kernel()`, which every entry point that needs them runs first.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from actorhub.api import fetch_local as fetch_local_
from actorhub.api import init_options
from actorhub.cluster import addresses, discovery
from actorhub.cluster.credentials import TokenRefusedError
from actorhub.cluster.launcher import (
    ClusterProcesses,
    abort_start,
    remove_segments,
    request_shutdown,
    start_head,
    stop_processes,
    wait_for_dashboard,
    wait_for_head,
)
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ActorHubSystemError, OptionsError, RpcFailedError
from actorhub.job_submission import driver_link
from actorhub.runtime import current as _current
from actorhub.runtime import tracing as _tracing

if TYPE_CHECKING:
    from actorhub.api.actor_handle import ActorHandle
    from actorhub.job_config import JobConfig
    from actorhub.runtime.endpoint import Endpoint
    from actorhub.runtime.object_ref import ObjectRef
    from actorhub.runtime.runtime import Runtime
    from actorhub.wire.hub import JobRegistration
    from actorhub.worker.service import WorkerService
else:
    ActorHandle = ObjectRef = None  # bound by _load_kernel(), with the rest of the kernel

T = TypeVar("T")
log = logging.getLogger("actorhub")


@dataclass(frozen=True)
class ClusterContext:
    """What init() returns: where the cluster is and who this driver is in it."""

    address: str
    session_dir: str
    namespace: str
    job_id: str
    node_id: str

    @property
    def address_info(self) -> dict[str, str]:
        return {"address": self.address, "session_dir": self.session_dir, "node_id": self.node_id}

    dashboard_url: str | None = None
    """HOST:PORT of the cluster's dashboard (the Job API), as Ray's; None when it runs none."""

    def __getitem__(self, key: str) -> str:
        # Ray's RayContext reads as a dict of its address info: ctx["address"], ctx["node_id"].
        info = {**self.address_info, "namespace": self.namespace, "job_id": self.job_id}
        try:
            return info[key]
        except KeyError:
            raise KeyError(f"{key!r}: the context has {', '.join(sorted(info))}") from None

    def get(self, key: str, default: str | None = None) -> str | None:
        try:
            return self[key]
        except KeyError:
            return default

    def __enter__(self) -> ClusterContext:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


class _Driver:
    """What init() made in this process, so shutdown() can undo exactly that."""

    def __init__(
        self, runtime: Runtime, context: ClusterContext, cluster: ClusterProcesses | None, config: Config,
        default_actor_lifetime: str,
    ) -> None:
        self.runtime = runtime
        self.context = context
        self.cluster = cluster
        self.config = config
        self.detached_by_default = default_actor_lifetime == "detached"
        self.lease: Any = None
        self.logs: Any = None  # api/driver_logs.DriverLogs, with log_to_driver


_driver: _Driver | None = None
_init_lock = threading.RLock()
_kernel_loaded = False


def is_initialized() -> bool:
    return _driver is not None


def driver_config() -> Config | None:
    """The Config this process's init() used (None outside a driver, or before init())."""
    driver = _driver
    return driver.config if driver is not None else None


def driver_context() -> ClusterContext | None:
    """What this process's init() returned (None outside a driver, or before init())."""
    driver = _driver
    return driver.context if driver is not None else None


def detached_by_default(runtime: Runtime) -> bool:
    """Whether actors created through `runtime` without a lifetime option are detached: the
    driver's JobConfig(default_actor_lifetime="detached")."""
    driver = _driver
    return driver is not None and driver.runtime is runtime and driver.detached_by_default


def _load_kernel() -> None:
    """Import the kernel (gRPC, the runtime) and bind the names this module takes from it."""
    from actorhub.api.actor_handle import ActorHandle
    from actorhub.runtime.object_ref import ObjectRef

    global _kernel_loaded
    globals().update(ActorHandle=ActorHandle, ObjectRef=ObjectRef)
    _kernel_loaded = True


def connected_runtime() -> Runtime:
    """The runtime a public entry point works through: the one place a cluster starts by itself.

    Like Ray, the first public call without init() (`f.remote()`, `Cls.remote()`, `put()`, ...)
    starts a local cluster. Only the public entry points call this; actorhub's own machinery
    uses the runtime it was given (or runtime.current(), which never starts anything), so it
    cannot start a stray cluster during shutdown. After shutdown(), as in Ray, the next public
    call starts a new cluster; handles of the old one refuse (actor_handle.py).
    """
    runtime = _current.runtime_or_none()
    if runtime is None or not _kernel_loaded:
        with _init_lock:
            if _current.runtime_or_none() is None:
                init()
            _load_kernel()  # a worker's runtime came without init()
        runtime = _current.runtime_or_none()
        if runtime is None:  # shut down meanwhile, on another thread
            from actorhub.runtime.runtime import current

            return current()  # raises NoRuntimeError
    # Only set_current() writes the slot, always with a Runtime.
    return cast("Runtime", runtime)


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
    object_store_memory: int | None = None,
    local_mode: bool = False,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    job_config: JobConfig | None = None,
    configure_logging: bool = True,
    logging_level: str | int | None = None,
    logging_format: str | None = None,
    logging_config: object | None = None,
    log_to_driver: bool | None = None,
    namespace: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    storage: str | None = None,
    enable_resource_isolation: bool = False,
    cgroup_path: str | None = None,
    system_reserved_cpu: float | None = None,
    system_reserved_memory: int | None = None,
    proxy_server_url: str | None = None,
    **kwargs: Any,
) -> ClusterContext:
    """Connect this program to a cluster, starting a local one only when there is none to join.

    address, in Ray's order (`cluster/discovery.py`): None joins ACTORHUB_ADDRESS (or
    RAY_ADDRESS) when set, else the newest cluster started on this host with `actorhub start`,
    else starts a local cluster (hub, node agent, workers) owned by this program; "auto" joins
    an existing cluster on this host or raises NoClusterError; "local" always starts a new one;
    "HOST:PORT" joins that hub, from any host, with ACTORHUB_TOKEN (or ACTORHUB_TOKEN_FILE)
    when this host has no session for it.

    Every keyword of Ray's `ray.init` is accepted (`api/init_options.py`): actorhub honours
    namespace, num_cpus, num_gpus, resources, object_store_memory, logging_level/logging_format/configure_logging,
    ignore_reinit_error, log_to_driver, runtime_env, job_config, `_temp_dir` (the session
    root), `_node_ip_address`, `_tracing_startup_hook` and `enable_object_reconstruction` (also
    `_system_config={"enable_object_reconstruction": True, "max_lineage_bytes": N}`); the others,
    when given a value, are named in one warning line.
    """
    global _driver
    options = init_options.resolve(
        num_gpus=num_gpus, resources=resources, labels=labels, local_mode=local_mode,
        include_dashboard=include_dashboard, dashboard_host=dashboard_host, dashboard_port=dashboard_port,
        job_config=job_config, configure_logging=configure_logging, logging_format=logging_format,
        logging_config=logging_config, log_to_driver=log_to_driver, runtime_env=runtime_env, storage=storage,
        enable_resource_isolation=enable_resource_isolation, cgroup_path=cgroup_path,
        system_reserved_cpu=system_reserved_cpu, system_reserved_memory=system_reserved_memory,
        proxy_server_url=proxy_server_url, hidden=kwargs,
    )
    if namespace is None:
        namespace = options.namespace
    if namespace is not None:
        _check_namespace(namespace)  # before anything starts: a bad one would fail in RegisterJob
    with _init_lock:
        if _driver is not None:
            if ignore_reinit_error:
                return _driver.context
            raise RuntimeError("actorhub.init() was already called; pass ignore_reinit_error=True to allow it")
        level = logging.getLevelName(logging_level) if isinstance(logging_level, int) else logging_level
        config = Config.load(
            num_cpus=num_cpus, logging_level=level, object_store_memory=object_store_memory, **options.config
        )
        if options.configure_logging:
            init_options.configure_logging(log, config.logging_level, options.logging_format)
        from actorhub.runtime_env import context as runtime_env_context

        # Checked before anything starts: a bad field or a missing directory raises OptionsError.
        job_env = runtime_env_context.checked(config.job_runtime_env, "init()")
        found = discovery.find(config, address or None, os.environ)
        if found is not None:
            options.ignored.extend(init_options.ignored_when_joining(
                num_cpus=num_cpus, object_store_memory=object_store_memory,
                tracing_startup_hook=kwargs.get("_tracing_startup_hook"), num_gpus=num_gpus, resources=resources,
                dashboard={"include_dashboard": include_dashboard, "dashboard_host": dashboard_host,
                           "dashboard_port": dashboard_port},
            ))
        if options.ignored:
            log.warning("%s", init_options.warning_line(options.ignored))
        cluster: ClusterProcesses | None = None
        if found is None:
            # Returns once the processes are spawned: the kernel's imports below overlap their boot.
            cluster = start_head(config, wait=False)
            session: Session | None = cluster.session
            hub_address, token = cluster.hub_address, cluster.session.token
            _announce(f"Started a local actorhub cluster (session {cluster.session.path}).")
        else:
            session, hub_address, token = found.session, found.hub_address, found.token
            _announce(f"Connecting to existing actorhub cluster at address: {hub_address} (found through {found.how})")
        try:
            _load_kernel()
            # The driver's own server starts while the hub may still be booting.
            endpoint, service = _open_endpoint(config, hub_address, token)
        except BaseException:
            if cluster is not None:
                abort_start(cluster)
            raise
        dashboard_url: str | None = None
        if cluster is not None:
            _import_first_use(config)
            try:
                wait_for_head(cluster, config)
                if config.include_dashboard:
                    dashboard_url = wait_for_dashboard(cluster.session, cluster.processes[2], config.connect_timeout_s)
                    _announce(f"View the dashboard at {dashboard_url}")
            except BaseException:
                endpoint.close()
                abort_start(cluster)
                raise
        runtime: Runtime | None = None
        try:
            runtime, context = _connect(endpoint, service, namespace, session, config, owns=cluster is not None)
            context = _with_dashboard(context, session, dashboard_url)
            driver = _Driver(runtime, context, cluster, config, options.default_actor_lifetime)
            driver.lease = runtime.job_lease(config.connect_timeout_s)
            # The job's env, its packages uploaded: what its actors and tasks inherit.
            runtime_env_context.start_job_env(runtime, job_env)
            if config.log_to_driver:
                from actorhub.api.driver_logs import DriverLogs

                driver.logs = DriverLogs.start(runtime, config)
        except BaseException:
            if runtime is not None:
                runtime.close()
            if cluster is not None:
                request_shutdown(cluster.hub_address, token, 2.0, tls=endpoint.channels.tls)
                stop_processes(cluster.processes, 5.0)
            raise
        _current.set_runtime(runtime)
        _driver = driver
        # The startup hook is the workers'; a driver sets its own tracing up, or exports by OTLP.
        _tracing.export_to(config.otlp_endpoint, "actorhub-driver")
        atexit.register(shutdown)
        if config.enable_object_reconstruction:
            from actorhub.tasks.submitters import submitter_for

            submitter_for(runtime)  # keeps lineage (tasks/lineage.py), and says why a lost put cannot be made again
        return context


def _import_first_use(config: Config) -> None:
    """Import while the cluster boots what init() imports on first use after its hub serves."""
    import importlib

    modules = ["grpc._channel", "grpc.experimental"]  # at gRPC's first channel: the one to the hub
    if config.log_to_driver:
        modules.append("actorhub.api.driver_logs")
    for module in modules:
        importlib.import_module(module)


def _with_dashboard(context: ClusterContext, session: Session | None, url: str | None) -> ClusterContext:
    if session is None:
        return context
    found = driver_link.driver_joined(session.path, context.job_id, url, os.environ)
    if url is None and found is not None:  # joined a cluster that serves one: Ray says where, as when it starts one
        _announce(f"View the dashboard at http://{found}")
    return dataclasses.replace(context, dashboard_url=found)


def _announce(line: str) -> None:
    """Which cluster init() chose: logged, and printed as Ray prints it (to stderr, so that a
    program's own output stays its own)."""
    log.info("%s", line)
    print(line, file=sys.stderr, flush=True)


def _check_namespace(namespace: object) -> None:
    """init()'s namespace: a usable name (a str that encodes as UTF-8), and not the system
    namespace, where actorhub's own actors live. Raises OptionsError (a ValueError)."""
    from actorhub.namespaces.rules import validate_namespace  # namespaces/ builds on the kernel

    try:
        validate_namespace(namespace)
    except (TypeError, ValueError) as e:
        shown = repr(namespace)  # escapes lone surrogates: the message itself must encode
        raise OptionsError(f"init(): namespace={shown[:60]}: {e}") from None


def _open_endpoint(config: Config, hub_address: str, token: str) -> tuple[Endpoint, WorkerService]:
    """This process's server, channels and hub client, serving (the job registers with its address).

    The server binds and advertises the address the hub's host reaches this one at: loopback
    for a hub on loopback, else the local address that routes to it (`addresses.node_host`).
    """
    from actorhub.runtime.endpoint import Endpoint
    from actorhub.wire.tls import load_tls
    from actorhub.worker.service import WorkerService

    host = addresses.node_host(config, addresses.parse_address(hub_address, "the hub's address")[0])
    endpoint = Endpoint(
        token=token, hub_address=hub_address, bind_host=host, deadlines=config.deadlines,
        max_message_bytes=config.max_message_bytes, hub_reconnect_s=config.hub_reconnect_timeout_s,
        tls=load_tls(config), pin_io_threads=config.pin_io_threads,
    )
    service = WorkerService(endpoint)
    endpoint.serve(service, service.close)
    return endpoint, service


def _connect(
    endpoint: Endpoint, service: WorkerService, namespace: str | None, session: Session | None, config: Config,
    owns: bool,
) -> tuple[Runtime, ClusterContext]:
    """Register the job on the serving `endpoint` and build the runtime on it (closed on failure)."""
    from actorhub.runtime.identity import Identity
    from actorhub.runtime.runtime import Runtime

    # The job registers with this process's address, so the endpoint (server, channels, hub)
    # comes first; the runtime is built once the hub has said who the job is, and never changes.
    try:
        try:
            reply = _register_job(endpoint, namespace, owns, config.connect_timeout_s)
        except RpcFailedError as err:
            if err.code is None or err.code.name != "UNAUTHENTICATED":
                raise
            where = f"session {session.path}" if session is not None else "ACTORHUB_TOKEN or ACTORHUB_TOKEN_FILE"
            raise TokenRefusedError(f"the hub at {endpoint.hub_address} refused this driver's token (from {where}): "
                                    "it is not that cluster's token") from None
        node_id, node_address = _wait_for_node(endpoint, reply.node_id, config.connect_timeout_s)
        identity = Identity(
            job_id=reply.job_id,
            namespace=reply.namespace,
            node_id=node_id,
            node_address=node_address,
        )
    except BaseException:
        endpoint.close()
        raise
    runtime = Runtime(identity, endpoint)
    service.bind(runtime)
    context = ClusterContext(
        address=endpoint.hub_address,
        session_dir=str(session.path) if session is not None else "",
        namespace=runtime.namespace,
        job_id=runtime.job_id,
        node_id=runtime.node_id,
    )
    return runtime, context


# These three run before the runtime exists, on the endpoint it will be built on.
def _register_job(endpoint: Endpoint, namespace: str | None, owns: bool, timeout: float) -> JobRegistration:
    # A hub that does not answer raises PeerUnavailableError or RpcDeadlineExceededError,
    # naming it ("RegisterJob to the hub at HOST:PORT ...").
    return endpoint.hub.register_job(namespace or "", os.getpid(), endpoint.address, owns, timeout)


def _wait_for_node(endpoint: Endpoint, node_id: str, timeout: float) -> tuple[str, str]:
    """The node to run on and its address: `node_id` (the hub named the driver's node), else
    the first alive node, once one has registered (a cluster can run an actor from then on).
    One status call when the node is there already; polls with a short backoff if it is not."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        status = endpoint.hub.cluster_status()
        for node in status.nodes:
            if node.node_id == node_id or (not node_id and node.alive):
                return node.node_id, node.address
        if node_id:
            return node_id, ""  # named by the hub, but not listed: as before, no address
        if time.monotonic() >= deadline:
            raise ActorHubSystemError(
                f"no node agent registered with the hub at {endpoint.hub_address} within {timeout} s"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.005)  # it registers at about the time its hub serves


def shutdown() -> None:
    """Disconnect; stop the cluster if init() started it. Leaves no process behind."""
    global _driver
    with _init_lock:
        driver = _driver
        if driver is None:
            return
        _driver = None
        _current.set_runtime(None)
        atexit.unregister(shutdown)
        cluster = driver.cluster
        if driver.logs is not None:
            driver.logs.stop()  # before the cluster goes: its last lines may be on their way
        if cluster is not None:
            request_shutdown(cluster.hub_address, driver.runtime.token, tls=driver.runtime.channels.tls)
        if driver.lease is not None:
            driver.lease.cancel()
        driver.runtime.close()
        if cluster is not None:
            stop_processes(cluster.processes, 10.0)
            remove_segments(cluster.session)


@overload
def get(refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...
@overload
def get(refs: Sequence[ObjectRef[Any]], *, timeout: float | None = None) -> list[Any]: ...
def get(refs: ObjectRef[Any] | Sequence[ObjectRef[Any]], *, timeout: float | None = None) -> Any:
    """The value of a ref, or the values of a list of refs; re-raises a remote error."""
    runtime = connected_runtime()
    if isinstance(refs, ObjectRef):
        return runtime.get([refs], timeout)[0]
    if not isinstance(refs, list | tuple) or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError(f"get() takes an ObjectRef or a list of ObjectRefs, not {type(refs).__name__}")
    return runtime.get(refs, timeout)


def put(value: Any) -> ObjectRef[Any]:
    """Store a value; the returned ref can be passed to actors and read with get()."""
    return connected_runtime().put(value)


def wait(
    refs: Sequence[ObjectRef[Any]],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    """Split refs into (ready, not ready) once num_returns are ready or the timeout passes."""
    if not _kernel_loaded:
        _load_kernel()
    if isinstance(refs, ObjectRef) or not isinstance(refs, list | tuple):
        raise TypeError(f"wait() takes a list of ObjectRefs, not {type(refs).__name__}")
    # Type and id sets, not per-ref Python calls: wait() is called in loops over long lists.
    if not set(map(type, refs)) <= {ObjectRef}:
        from actorhub.runtime import object_ref_generator as _generators

        if set(map(type, refs)) <= {ObjectRef, _generators.ObjectRefGenerator}:
            # Streaming calls' generators: ready when next() would not block, as in Ray.
            if not 0 <= num_returns <= len(refs):
                raise ValueError(f"num_returns={num_returns} must be between 0 and the number of refs ({len(refs)})")
            runtime = connected_runtime()
            return _generators.wait_with_generators(refs, num_returns, timeout, runtime.objects, runtime.start_fetch)
        raise TypeError("wait() takes a list of ObjectRefs; the list holds something else")
    if not refs:
        return [], []  # as Ray: nothing to wait for, whatever num_returns says
    if len(set(map(ObjectRef.hex, refs))) != len(refs):
        raise ValueError("wait() got the same ObjectRef more than once")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns={num_returns} must be between 0 and the number of refs ({len(refs)})")
    runtime = connected_runtime()
    deadline = None if timeout is None else time.monotonic() + timeout
    ready, not_ready = runtime.wait(list(refs), num_returns, timeout)
    if not fetch_local or not ready:
        return ready, not_ready
    remote = fetch_local_.elsewhere(runtime, ready)
    if not remote:
        return ready, not_ready
    late = fetch_local_.pull_here(runtime, remote, deadline)
    if not late:
        return ready, not_ready
    # Not here in time: not ready yet, in the caller's order.
    waiting = late.union(not_ready)
    return [r for r in ready if r not in late], [r for r in refs if r in waiting]


def kill(actor: ActorHandle[Any], *, no_restart: bool = True) -> None:
    """Kill the actor's process; returns once it is gone. With no_restart=False it may restart."""
    # TypeError, as get(), wait() and cancel() raise for arguments of the wrong type.
    if not _kernel_loaded:
        _load_kernel()
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, not {type(actor).__name__}")
    if not isinstance(no_restart, bool):
        raise TypeError(f"kill(): no_restart must be a bool, not {type(no_restart).__name__}")
    # Raises ValueError for an actor the hub does not know; ControlPlaneUnavailableError when
    # the hub is away (down, or restarting) for the whole kill deadline.
    runtime = connected_runtime()
    runtime.hub.kill_actor(actor.actor_id, no_restart)
    if no_restart:
        # Gone for good: when its handles go, there is nothing left to end (runtime/actor_refs.py).
        runtime.owned_actors.forget(actor.actor_id)
