"""Ray's placement groups (`ray.util.placement_group`): bundles of resources reserved at once.

`placement_group(bundles, strategy)` asks the hub to reserve every bundle (all or none, under
the strategy; hub/placement_group_table.py) and returns at once; `ready()` / `wait()` tell when
it is reserved. Actors (and, with task resources, tasks) use a bundle through
`PlacementGroupSchedulingStrategy`: their request is rewritten here, at the caller, into the
bundle's resource names (hub/bundles.py), which only the nodes holding the group's bundles
offer, so the hub places them with its usual vector placement.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import astuple, replace
from typing import TYPE_CHECKING, Any

from actorhub.exceptions import OptionsError
from actorhub.hub.bundles import STRATEGIES, check_bundles, group_request
from actorhub.runtime import placement_scope, task_context
from actorhub.runtime import runtime as runtime_module
from actorhub.runtime.ids import new_id
from actorhub.util.placement_group_calls import calls_of
from actorhub.wire.placement_groups import GroupCreate, GroupRemove

if TYPE_CHECKING:
    from actorhub.runtime.object_ref import ObjectRef
    from actorhub.runtime.runtime import Runtime
    from actorhub.wire.placement_groups import PlacementGroupState
    from actorhub.wire.records import ActorSpec

__all__ = [
    "PlacementGroup",
    "PlacementGroupID",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]

# How long one long poll of ready()'s thread waits at the hub before asking again.
_READY_POLL_S = 10.0
_ready_ids = itertools.count()


def _runtime() -> Runtime:
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    return connected_runtime()


class PlacementGroupID:
    """A placement group's id (Ray's PlacementGroupID): 18 bytes, shown as hex."""

    __slots__ = ("_hex",)

    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def binary(self) -> bytes:
        return bytes.fromhex(self._hex)

    def is_nil(self) -> bool:
        return not self._hex.strip("f") or not self._hex

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash(self._hex)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self._hex})"


class PlacementGroup:
    """A handle on a placement group; pickles to its id and bundles."""

    def __init__(self, id: PlacementGroupID, bundle_cache: Sequence[Mapping[str, float]] | None = None) -> None:
        self.id = id
        self._bundles = [dict(b) for b in bundle_cache] if bundle_cache is not None else None

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        if self._bundles is None:
            self._bundles = [dict(b) for b in _state(_runtime(), self.id.hex()).bundles]
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    @property
    def is_empty(self) -> bool:
        return self.id.is_nil()

    def ready(self) -> ObjectRef[PlacementGroup]:
        """A ref that resolves to this group once all its bundles are reserved (`get`, `wait`)."""
        from actorhub.runtime.object_ref import ObjectRef
        from actorhub.runtime.object_table import ErrorOrigin

        runtime = _runtime()
        calls_of(runtime).settle(self.id.hex())
        object_id = f"{runtime.id_prefix()}.g{next(_ready_ids):x}"
        runtime.objects.create_pending([object_id], ErrorOrigin(function_name="PlacementGroup.ready"))
        ref: ObjectRef[PlacementGroup] = ObjectRef(object_id, runtime.address, runtime.objects)
        threading.Thread(target=self._settle_ready, args=(runtime, object_id), daemon=True,
                         name="placement-group-ready").start()
        return ref

    def _settle_ready(self, runtime: Runtime, object_id: str) -> None:
        from actorhub.runtime import serialization
        from actorhub.wire.errors import ErrorKind, system_error

        try:
            while True:
                state = runtime.hub.wait_placement_group(self.id.hex(), _READY_POLL_S)
                if state.state in ("CREATED", "REMOVED") or not runtime.objects.has(object_id):
                    break
        except Exception as e:
            runtime.objects.fail_fetch(object_id, system_error(
                f"placement group {self.id.hex()}: could not learn whether it was created: {e}", ErrorKind.SYSTEM))
            return
        if state.state == "CREATED":
            runtime.objects.complete_many([(object_id, serialization.dumps(self), None)])
        else:
            runtime.objects.fail_fetch(object_id, system_error(
                f"placement group {self.id.hex()} was removed before it was created", ErrorKind.SYSTEM))

    def wait(self, timeout_seconds: float | int = 30) -> bool:
        """True once every bundle is reserved, False when `timeout_seconds` pass first."""
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, (int, float)) or timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must be a number >= 0, not {timeout_seconds!r}")
        runtime = _runtime()
        calls = calls_of(runtime)
        calls.settle(self.id.hex())
        if self.id.hex() in calls.created:
            return True
        state = runtime.hub.wait_placement_group(self.id.hex(), float(timeout_seconds))
        return state.state == "CREATED"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        # Handed to another process only once the hub has its creation (queued here until then):
        # the other process must not find the hub without it.
        current = runtime_module.current_or_none()
        if current is not None:
            try:
                calls_of(current).settle(self.id.hex())
            except Exception:  # its failure is this process's to raise, at its own next use
                pass
        return (_rebuild, (self.id.hex(), self._bundles))

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()})"


def _rebuild(hex_id: str, bundles: list[dict[str, float]] | None) -> PlacementGroup:
    return PlacementGroup(PlacementGroupID(hex_id), bundles)


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _max_cpu_fraction_per_node: float | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: list[dict[str, str]] | None = None,
) -> PlacementGroup:
    """Reserve `bundles` under `strategy`, asynchronously: `ready()` / `wait()` tell when."""
    try:
        checked = check_bundles(bundles)
    except ValueError as e:
        raise OptionsError(f"invalid placement group: {e}") from None
    if strategy not in STRATEGIES:
        raise OptionsError(f"invalid placement group: unknown strategy {strategy!r}; use one of "
                           f"{', '.join(STRATEGIES)}")
    if not isinstance(name, str):
        raise OptionsError(f"invalid placement group: name must be a string, not {type(name).__name__}")
    if lifetime not in (None, "detached"):
        raise OptionsError(f"invalid placement group: lifetime must be None or 'detached', not {lifetime!r}")
    if _max_cpu_fraction_per_node is not None or _soft_target_node_id is not None or bundle_label_selector:
        raise OptionsError("invalid placement group: _max_cpu_fraction_per_node, _soft_target_node_id and "
                           "bundle_label_selector are not supported")
    runtime = _runtime()
    in_task = task_context.running_task() is not None
    create = GroupCreate(new_id(18), tuple(checked), strategy, name, task_context.namespace_of(runtime),
                         lifetime == "detached", task_context.job_id_of(runtime), "" if in_task else runtime.actor_id)
    group_id = create.group_id
    if name:
        # A taken name must raise here, as in Ray.
        try:
            runtime.hub.create_placement_group(*astuple(create))
        except ValueError as e:
            raise OptionsError(f"invalid placement group: {e}") from None
    else:
        calls_of(runtime).submit(create)
    return PlacementGroup(PlacementGroupID(group_id), checked)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Free the group's bundles; its actors are killed and its queued tasks fail, as in Ray."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group takes a PlacementGroup, not {type(placement_group).__name__}")
    runtime = _runtime()
    group_id = placement_group.id.hex()
    calls_of(runtime).submit(GroupRemove(group_id))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The group named so in the caller's namespace (a ValueError when there is none)."""
    if not isinstance(placement_group_name, str) or not placement_group_name:
        raise ValueError(f"a placement group name must be a non-empty string, not {placement_group_name!r}")
    runtime = _runtime()
    namespace = task_context.namespace_of(runtime)
    try:
        state = runtime.hub.get_placement_group(name=placement_group_name, namespace=namespace)
    except LookupError:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name} "
                         f"(namespace {namespace})") from None
    return PlacementGroup(PlacementGroupID(state.group_id), state.bundles)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Ray's table: one group's entry, or every group's by id."""
    runtime = _runtime()
    if placement_group is not None:
        return _entry(_state(runtime, placement_group.id.hex()))
    calls_of(runtime).settle_all()
    return {g.group_id: _entry(g) for g in runtime.hub.list_placement_groups()}


def _state(runtime: Runtime, group_id: str) -> PlacementGroupState:
    calls_of(runtime).settle(group_id)
    try:
        return runtime.hub.get_placement_group(group_id)
    except LookupError as e:
        raise ValueError(str(e)) from None


def _entry(g: PlacementGroupState) -> dict[str, Any]:
    return {
        "placement_group_id": g.group_id,
        "name": g.name,
        "bundles": dict(enumerate(g.bundles)),
        "bundles_to_node_id": {i: node for i, node in enumerate(g.bundle_node_ids) if node},
        "strategy": g.strategy,
        "state": g.state,
        "stats": {"scheduling_state": "INFEASIBLE" if g.infeasible else g.state, "pending_reason": g.pending_reason},
        "detached": g.detached,
        "creator_job_id": g.creator_job_id,
    }


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling actor runs in; None in a driver or outside any group."""
    scope = placement_scope.current()
    if scope is None:
        return None
    return PlacementGroup(PlacementGroupID(scope.group_id))


# ---- what runs in a group: the request rewritten at the caller ---------------------------------

def placed_in_group(spec: ActorSpec, strategy: object) -> ActorSpec:
    """`spec` rewritten into its group's bundle resources when its strategy (or, with none, the
    creating actor's captured group) names a group; unchanged otherwise."""
    from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        if strategy.placement_group is None:
            return spec
        group_id = strategy.placement_group.id.hex()
        current = runtime_module.current_or_none()
        if current is not None:
            calls_of(current).settle(group_id)  # the hub knows the group before the actor
        index = strategy.placement_group_bundle_index
        capture = bool(strategy.placement_group_capture_child_tasks)
        bundles = strategy.placement_group._bundles
    else:
        scope = placement_scope.current()
        if strategy is not None or scope is None or not scope.capture_child_tasks:
            return spec
        group_id, index, capture, bundles = scope.group_id, -1, True, None
    others = dict(spec.resources)
    if bundles is not None:
        _check_fits(spec.class_name, spec.num_cpus, others, bundles, index)
        if spec.placement_cpus > 0 and not any(b.get("CPU", 0.0) >= spec.placement_cpus - 1e-9 for b in bundles):
            # Ray's check (any bundle): an actor that asks for nothing still needs a CPU to be placed.
            raise OptionsError(
                f"cannot schedule {spec.class_name} with the placement group: an actor that asks for no resources "
                f"needs {spec.placement_cpus:g} CPU to be placed, and no bundle of {[dict(b) for b in bundles]} "
                "has it; give the group a bundle with CPUs, or the actor num_cpus=0")
    need = group_request(group_id, index, spec.num_cpus, others)
    # placement_cpus stays: the hub places such an actor where its bundle has that CPU free, and
    # holds none (hub/placement_group_table.py `_placement_need`).
    return replace(spec, num_cpus=0.0, resources=tuple(sorted(need.items())),
                   placement_group_id=group_id, placement_group_bundle_index=index,
                   placement_group_capture_child_tasks=capture)


# Options of tasks captured into their actor's group, by the options they were given (kept, so
# their ids are not reused while cached).
_captured: dict[tuple[int, str], tuple[Any, Any]] = {}  # by (id of the options, group): tasks differ
_MAX_CAPTURED = 256


def captured_options(options: Any) -> Any:
    """A task's options (without a strategy) inside an actor that captures its child tasks:
    the same, in the actor's group (any bundle), as Ray's placement_group_capture_child_tasks."""
    from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    scope = placement_scope.current()
    if scope is None or not scope.capture_child_tasks:
        return options
    key = (id(options), scope.group_id)
    cached = _captured.get(key)
    if cached is not None and cached[0] is options:
        return cached[1]
    strategy = PlacementGroupSchedulingStrategy(PlacementGroup(PlacementGroupID(scope.group_id)), -1, True)
    merged = options.merged("a task captured into its actor's placement group", scheduling_strategy=strategy)
    if len(_captured) >= _MAX_CAPTURED:
        _captured.clear()
    _captured[key] = (options, merged)
    return merged


def task_values_in_group(values: dict[str, Any]) -> dict[str, Any]:
    """A task's raw options with a PlacementGroupSchedulingStrategy, its request rewritten into
    the bundle's names (once: options merged later keep the rewritten request)."""
    strategy = values["scheduling_strategy"]
    resources = values.get("resources") or {}
    group = strategy.placement_group
    if group is None or not isinstance(resources, dict) or any(str(k).startswith("bundle_group_") for k in resources):
        return values
    cpus, gpus, memory = values.get("num_cpus", 1.0), values.get("num_gpus", 0.0), values.get("memory", 0.0)
    amounts = [cpus, gpus, memory, *resources.values()]
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in amounts):
        return values  # the fields' own checks name what is wrong
    others = {**resources, "GPU": gpus, "memory": memory}
    others = {k: float(v) for k, v in others.items() if v > 0}
    group_id, index = group.id.hex(), strategy.placement_group_bundle_index
    if group._bundles is not None:
        _check_fits("the task", float(cpus), others, group._bundles, index)
    return {**values, "num_cpus": 0.0, "num_gpus": 0.0, "memory": 0.0,
            "resources": group_request(group_id, index, float(cpus), others)}


def _check_fits(what: str, cpus: float, others: Mapping[str, float], bundles: Sequence[Mapping[str, float]],
                index: int) -> None:
    need = {**others, "CPU": cpus} if cpus > 0 else dict(others)
    candidates = [bundles[index]] if 0 <= index < len(bundles) else list(bundles)

    def fits(bundle: Mapping[str, float]) -> bool:
        return all(bundle.get(name, 0.0) >= amount - 1e-9 for name, amount in need.items())

    if not any(fits(b) for b in candidates):
        where = f"bundle {index}" if index >= 0 else "any bundle"
        raise OptionsError(f"cannot schedule {what} with the placement group: the request {need} cannot fit into "
                           f"{where} of {[dict(b) for b in bundles]}")
