"""Ray's state API (`ray.util.state`): list and get the cluster's actors, nodes, tasks,
objects, jobs and placement groups.

Each call reads fresh from where the state lives, through the dashboard's reader
(`dashboard/cluster_state.py`), so the page, `actorhub list` and these functions show the same
data. `address` is found as `init()` finds a cluster: None means this process's cluster when
`init()` ran, else the newest cluster on this host ("auto"). Jobs come from the head's Job API,
so `list_jobs` needs the cluster's dashboard, as all of Ray's state API does.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from actorhub.config import Config
from actorhub.dashboard.cluster_state import (
    READ_DEADLINES,
    ActorRow,
    ClusterStateReader,
    NodeRow,
    ObjectRow,
    PlacementGroupRow,
    TaskRow,
)
from actorhub.exceptions import RpcFailedError, StateApiError
from actorhub.util.state import filters as _filters
from actorhub.util.state.filters import Filter
from actorhub.util.state.schema import (
    ActorState,
    NodeState,
    ObjectState,
    PlacementGroupState,
    StateSchema,
    TaskState,
)
from actorhub.wire.transport import ChannelPool

DEFAULT_LIMIT = 100
DEFAULT_TIMEOUT_S = 30
_ACTOR_STATES = {"PENDING": "PENDING_CREATION"}


@contextlib.contextmanager
def open_reader(address: str | None, timeout: float) -> Iterator[ClusterStateReader]:
    """A reader of the cluster at `address` (see the module's docstring), closed afterwards."""
    if not timeout > 0:
        raise StateApiError(f"timeout={timeout!r}: must be a positive number of seconds")
    deadlines = READ_DEADLINES.model_copy(update={"control_s": float(timeout)})
    from actorhub.runtime import runtime as runtime_module

    runtime = runtime_module.current_or_none()
    if address is None and runtime is not None:
        yield ClusterStateReader(runtime.channels, runtime.hub_address, deadlines)
        return
    from actorhub.cluster import discovery
    from actorhub.wire.tls import load_tls

    config = Config.load()
    found = discovery.find(config, address or "auto", os.environ)
    if found is None:  # "auto" raises instead; an explicit "local" means no existing cluster
        raise StateApiError(f"address={address!r}: names no running cluster to read")
    channels = ChannelPool(found.token, tls=load_tls(config))
    try:
        yield ClusterStateReader(channels, found.hub_address, deadlines)
    finally:
        channels.close()


def reader_rows(kind: str, reader: ClusterStateReader) -> tuple[list[StateSchema], list[str]]:
    """Every row of `kind` ("actors", "nodes", "tasks", "objects", "placement-groups") and the
    sources that did not answer."""
    try:
        if kind == "actors":
            return [actor_state(a) for a in reader.actors() if not a.system], []
        status = reader.status()
        if kind == "nodes":
            return [node_state(n) for n in reader.nodes(status)], []
        if kind == "tasks":
            return [row for t in reader.tasks(status) for row in task_states(t)], []
        if kind == "objects":
            listing = reader.objects(status)
            return [object_state(o) for o in listing.objects], listing.unreachable
        if kind == "placement-groups":
            return [placement_group_state(g) for g in reader.placement_groups(status)], []
    except RpcFailedError as err:
        raise StateApiError(f"reading the cluster's {kind}: {err}") from err
    raise StateApiError(f"unknown kind {kind!r}")


def select(rows: Sequence[StateSchema], schema: type[StateSchema], missing: Sequence[str],
           filters: Sequence[Filter] | None, limit: int, raise_on_missing_output: bool) -> list[Any]:
    """Rows that pass `filters`, at most `limit`; the unreachable sources raise or warn."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise StateApiError(f"limit={limit!r}: must be a positive integer")
    passed = _filters.apply(rows, schema, filters)
    if missing:
        message = "part of the state is missing, because these did not answer: " + "; ".join(missing)
        if raise_on_missing_output:
            raise StateApiError(message + " (raise_on_missing_output=False returns the rest)")
        warnings.warn(message, stacklevel=3)
    if len(passed) > limit:
        warnings.warn(f"{len(passed)} rows match; returning the first {limit} (raise `limit` for more)",
                      stacklevel=3)
    return passed[:limit]


SCHEMAS: dict[str, type[StateSchema]] = {
    "actors": ActorState, "nodes": NodeState, "tasks": TaskState, "objects": ObjectState,
    "placement-groups": PlacementGroupState,
}


def list_kind(kind: str, reader: ClusterStateReader, filters: Sequence[Filter] | None, limit: int,
              raise_on_missing_output: bool) -> list[Any]:
    """The rows of `kind` (a key of SCHEMAS) that pass `filters`, at most `limit`."""
    rows, missing = reader_rows(kind, reader)
    return select(rows, SCHEMAS[kind], missing, filters, limit, raise_on_missing_output)


def _list(kind: str, address: str | None, filters: Sequence[Filter] | None,
          limit: int, timeout: float, raise_on_missing_output: bool) -> list[Any]:
    with open_reader(address, timeout) as reader:
        return list_kind(kind, reader, filters, limit, raise_on_missing_output)


def list_actors(address: str | None = None, filters: Sequence[Filter] | None = None, limit: int = DEFAULT_LIMIT,
                timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
                raise_on_missing_output: bool = True) -> list[ActorState]:
    """Every user actor the hub keeps, dead ones (its bounded history) included."""
    return _list("actors", address, filters, limit, timeout, raise_on_missing_output)


def list_nodes(address: str | None = None, filters: Sequence[Filter] | None = None, limit: int = DEFAULT_LIMIT,
               timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
               raise_on_missing_output: bool = True) -> list[NodeState]:
    return _list("nodes", address, filters, limit, timeout, raise_on_missing_output)


def list_tasks(address: str | None = None, filters: Sequence[Filter] | None = None, limit: int = DEFAULT_LIMIT,
               timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
               raise_on_missing_output: bool = True) -> list[TaskState]:
    """Tasks by function, node and state, each row with its `count` (see TaskState)."""
    return _list("tasks", address, filters, limit, timeout, raise_on_missing_output)


def list_objects(address: str | None = None, filters: Sequence[Filter] | None = None, limit: int = DEFAULT_LIMIT,
                 timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
                 raise_on_missing_output: bool = True) -> list[ObjectState]:
    """Every owner's objects (drivers and actors) with their sizes and the nodes that keep them."""
    return _list("objects", address, filters, limit, timeout, raise_on_missing_output)


def list_placement_groups(address: str | None = None, filters: Sequence[Filter] | None = None,
                          limit: int = DEFAULT_LIMIT, timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
                          raise_on_missing_output: bool = True) -> list[PlacementGroupState]:
    return _list("placement-groups", address, filters, limit, timeout, raise_on_missing_output)


def list_jobs(address: str | None = None, filters: Sequence[Filter] | None = None, limit: int = DEFAULT_LIMIT,
              timeout: float = DEFAULT_TIMEOUT_S, detail: bool = False,
              raise_on_missing_output: bool = True) -> list[Any]:
    """The submitted jobs (`JobDetails`, as `JobSubmissionClient.list_jobs()` returns them),
    read from the head's Job API; filters apply to JobDetails' fields."""
    from actorhub.exceptions import JobSubmissionError
    from actorhub.job_submission import JobSubmissionClient

    try:
        jobs = JobSubmissionClient(address).list_jobs()
    except JobSubmissionError as err:
        raise StateApiError(f"list_jobs needs the cluster's dashboard (its Job API): {err}") from err
    rows = [_JobRow(job) for job in jobs]
    return [row.job for row in select(rows, _JobRow, [], filters, limit, raise_on_missing_output)]


def summarize_tasks(address: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                    raise_on_missing_output: bool = True) -> dict[str, Any]:
    """Ray's task summary: per function, how many tasks are in each state."""
    tasks = list_tasks(address, limit=10**9, timeout=timeout, raise_on_missing_output=raise_on_missing_output)
    summary: dict[str, dict[str, Any]] = {}
    for t in tasks:
        entry = summary.setdefault(t.name, {"func_or_class_name": t.name, "type": t.type, "state_counts": {}})
        entry["state_counts"][t.state] = entry["state_counts"].get(t.state, 0) + t.count
    finished_or_running = sum(t.count for t in tasks)
    return {"cluster": {"summary": summary, "total_tasks": finished_or_running, "total_actor_tasks": 0,
                        "total_actor_scheduled": 0, "summary_by": "func_name"}}


def get_actor(id: str, address: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> ActorState | None:
    """The actor with that id (alive or in the hub's history of dead ones), or None."""
    with open_reader(address, timeout) as reader:
        try:
            return actor_state(reader.actor(id))
        except ValueError:
            return None
        except RpcFailedError as err:
            raise StateApiError(f"reading actor {id}: {err}") from err


def get_node(id: str, address: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> NodeState | None:
    with open_reader(address, timeout) as reader:
        try:
            row = reader.node(id)
        except RpcFailedError as err:
            raise StateApiError(f"reading node {id}: {err}") from err
    return node_state(row) if row is not None else None


def get_placement_group(id: str, address: str | None = None,
                        timeout: float = DEFAULT_TIMEOUT_S) -> PlacementGroupState | None:
    found = list_placement_groups(address, filters=[("placement_group_id", "=", id)], timeout=timeout)
    return found[0] if found else None


# -- rows as Ray shows them --------------------------------------------------------------------
def actor_state(a: ActorRow) -> ActorState:
    return ActorState(
        actor_id=a.actor_id, class_name=a.class_name, state=_ACTOR_STATES.get(a.state, a.state),
        job_id=a.owner_job_id, name=a.name, node_id=a.node_id, pid=a.pid, ray_namespace=a.namespace,
        is_detached=a.detached, num_restarts=a.num_restarts,
        death_cause={"actor_died_error_context": {"error_message": a.death_cause}} if a.death_cause else None,
        repr_name="", pending_reason=a.pending_reason, incarnation=a.incarnation,
    )


def node_state(n: NodeRow) -> NodeState:
    store = n.object_store
    return NodeState(
        node_id=n.node_id, node_ip=n.address.rpartition(":")[0], is_head_node=n.is_head,
        state="ALIVE" if n.alive else "DEAD", state_message=n.drain_state, node_name=n.address.rpartition(":")[0],
        resources_total=dict(n.resources_total), resources_available=dict(n.resources_available),
        object_store_used_bytes=store.used if store else 0, object_store_capacity_bytes=store.capacity if store else 0,
    )


def task_states(t: TaskRow) -> list[TaskState]:
    counts = {"RUNNING": t.running, "FINISHED": t.finished, "FAILED": t.failed}
    return [TaskState(name=t.name, func_or_class_name=t.name, state=state, node_id=t.node_id, type="NORMAL_TASK",
                      count=count) for state, count in counts.items() if count]


def object_state(o: ObjectRow) -> ObjectState:
    status = {"pending": "PENDING", "error": "FAILED"}.get(o.where, "FINISHED")
    return ObjectState(
        object_id=o.object_id, object_size=o.size, task_status=status,
        reference_type="LOCAL_REFERENCE" if o.local_refs else "BORROWED",
        ip=o.owner_address.rpartition(":")[0], owner=o.owner, node_ids=list(o.stored_on),
    )


def placement_group_state(g: PlacementGroupRow) -> PlacementGroupState:
    bundles = [{"bundle_id": i, "node_id": node, "unit_resources": dict(b)}
               for i, (b, node) in enumerate(zip(g.bundles, [*g.bundle_node_ids, *[""] * len(g.bundles)],
                                                 strict=False))]
    return PlacementGroupState(
        placement_group_id=g.placement_group_id, name=g.name, creator_job_id=g.creator_job_id, state=g.state,
        strategy=g.strategy, is_detached=g.detached, bundles=bundles, ray_namespace=g.namespace,
        pending_reason=g.pending_reason,
    )


class _JobRow(StateSchema):
    """A JobDetails seen through the filter's columns (its pydantic fields)."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def __getitem__(self, column: str) -> Any:
        value = getattr(self.job, column)
        return value.value if hasattr(value, "value") else value  # JobStatus and JobType are enums

    @classmethod
    def column_types(cls) -> dict[str, str]:
        from actorhub.job_submission.models import JobDetails

        return {name: getattr(f.annotation, "__name__", str(f.annotation))
                for name, f in JobDetails.model_fields.items()}
