"""The hub client's placement group calls, mixed into `HubClient`, and the record they return."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.wire.rpc import ALREADY_EXISTS, NOT_FOUND

if TYPE_CHECKING:
    from actorhub._proto.v1 import hub_pb2_grpc

R = TypeVar("R")

__all__ = ["GroupCreate", "GroupOp", "GroupRemove", "PlacementGroupCalls", "PlacementGroupState"]


@dataclass(frozen=True)
class PlacementGroupState:
    """A placement group as the hub has it."""

    group_id: str
    name: str
    namespace: str
    strategy: str
    bundles: tuple[dict[str, float], ...]
    detached: bool
    creator_job_id: str
    state: str
    """PENDING, CREATED, RESCHEDULING or REMOVED."""
    bundle_node_ids: tuple[str, ...]
    """Per bundle; "" while it has no node."""
    pending_reason: str = ""
    infeasible: bool = False


@dataclass(frozen=True)
class GroupCreate:
    """Create a group (`PlacementGroupCalls.placement_group_batch`)."""

    group_id: str
    bundles: tuple[dict[str, float], ...]
    strategy: str
    name: str
    namespace: str
    detached: bool
    creator_job_id: str
    creator_actor_id: str


@dataclass(frozen=True)
class GroupRemove:
    group_id: str


GroupOp = GroupCreate | GroupRemove


def group_state(info: hub_pb2.PlacementGroupInfo) -> PlacementGroupState:
    spec = info.spec
    return PlacementGroupState(
        group_id=spec.placement_group_id, name=spec.name, namespace=spec.namespace, strategy=spec.strategy,
        bundles=tuple(dict(b.resources) for b in spec.bundles), detached=spec.detached,
        creator_job_id=spec.creator_job_id, state=info.state, bundle_node_ids=tuple(info.bundle_node_ids),
        pending_reason=info.pending_reason, infeasible=info.infeasible,
    )


class PlacementGroupCalls:
    """Bad input (INVALID_ARGUMENT) and a taken name (ALREADY_EXISTS) raise ValueError with the
    hub's words; an unknown group (NOT_FOUND) raises LookupError."""

    deadlines: RpcDeadlines

    if TYPE_CHECKING:
        def _call(self, operation: str, method: Callable[..., R], request: Any, timeout: float, *,
                  repeat: bool, wait_for_ready: bool | None = None) -> R: ...

        def _stub(self) -> hub_pb2_grpc.HubStub: ...

    def create_placement_group(
        self, group_id: str, bundles: Sequence[Mapping[str, float]], strategy: str, name: str, namespace: str,
        detached: bool, creator_job_id: str, creator_actor_id: str,
    ) -> PlacementGroupState:
        """Repeatable: the hub answers a second creation of one id with the group it has."""
        spec = _spec(GroupCreate(group_id, tuple(dict(b) for b in bundles), strategy, name, namespace, detached,
                                 creator_job_id, creator_actor_id))
        return self._group_call("CreatePlacementGroup", self._stub().CreatePlacementGroup, spec,
                                self.deadlines.control_s)

    def placement_group_batch(self, ops: Sequence[GroupOp]) -> list[PlacementGroupState | Exception | None]:
        """Each op's outcome in order: a creation's group, None for a removal, or the error it
        would have raised alone. Repeatable: creations are by id, a second removal is none."""
        request = hub_pb2.PlacementGroupOps(ops=[
            hub_pb2.PlacementGroupOp(create=_spec(op)) if isinstance(op, GroupCreate)
            else hub_pb2.PlacementGroupOp(remove=op.group_id) for op in ops])
        reply: hub_pb2.PlacementGroupOpResults = self._call(
            "PlacementGroupBatch", self._stub().PlacementGroupBatch, request, self.deadlines.control_s, repeat=True)
        outcomes: list[PlacementGroupState | Exception | None] = []
        for op, result in zip(ops, reply.results, strict=True):
            if result.error:
                outcomes.append(LookupError(result.error) if result.not_found else ValueError(result.error))
            else:
                outcomes.append(group_state(result.info) if isinstance(op, GroupCreate) else None)
        return outcomes

    def remove_placement_group(self, group_id: str) -> None:
        request = hub_pb2.PlacementGroupRemoveRequest(placement_group_id=group_id)
        try:
            self._call("RemovePlacementGroup", self._stub().RemovePlacementGroup, request,
                       self.deadlines.control_s, repeat=True)
        except RpcFailedError as e:
            raise _typed(e) from None

    def wait_placement_group(self, group_id: str, wait_s: float) -> PlacementGroupState:
        """The group once CREATED or REMOVED, or as it is after `wait_s` (a long poll)."""
        request = hub_pb2.PlacementGroupWaitRequest(placement_group_id=group_id, timeout_s=wait_s)
        return self._group_call("WaitPlacementGroup", self._stub().WaitPlacementGroup, request,
                                wait_s + self.deadlines.long_poll_margin_s)

    def get_placement_group(self, group_id: str = "", name: str = "", namespace: str = "") -> PlacementGroupState:
        request = hub_pb2.PlacementGroupGetRequest(placement_group_id=group_id, name=name, namespace=namespace)
        return self._group_call("GetPlacementGroup", self._stub().GetPlacementGroup, request,
                                self.deadlines.control_s)

    def list_placement_groups(self) -> list[PlacementGroupState]:
        reply: hub_pb2.PlacementGroupList = self._call(
            "ListPlacementGroups", self._stub().ListPlacementGroups, common_pb2.Empty(), self.deadlines.control_s,
            repeat=True)
        return [group_state(g) for g in reply.groups]

    def _group_call(self, operation: str, method: Callable[..., Any], request: Any, timeout: float,
                    ) -> PlacementGroupState:
        try:
            info: hub_pb2.PlacementGroupInfo = self._call(operation, method, request, timeout, repeat=True)
        except RpcFailedError as e:
            raise _typed(e) from None
        return group_state(info)


def _spec(op: GroupCreate) -> hub_pb2.PlacementGroupSpec:
    return hub_pb2.PlacementGroupSpec(
        placement_group_id=op.group_id, name=op.name, namespace=op.namespace, strategy=op.strategy,
        bundles=[hub_pb2.PlacementGroupBundle(resources=b) for b in op.bundles], detached=op.detached,
        creator_job_id=op.creator_job_id, creator_actor_id=op.creator_actor_id,
    )


def _typed(err: RpcFailedError) -> Exception:
    if err.code in (grpc.StatusCode.INVALID_ARGUMENT, ALREADY_EXISTS):
        return ValueError(err.details)
    if err.code == NOT_FOUND:
        return LookupError(err.details)
    return err
