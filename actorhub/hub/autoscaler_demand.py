"""What the autoscaler reads from the hub: the nodes' load and every demand that waits.

The hub knows each node's load (what its actors hold, what its desk lent to tasks) and the
actors it could not place (its pending set). Tasks waiting for a lease are
known only to the process that submitted them (a desk sees at most the leases a submitter may
ask for, never its backlog), so each submitter reports its backlog by shape
(`AutoscalerReportDemand`, `actorhub/autoscaler/task_demand.py`): a report replaces that
reporter's previous one and lapses after `REPORT_TTL_S` unless renewed, so a reporter that died
stops counting by itself. `request_resources()` is kept here too, replaced by each call, in
memory only (a restarted hub forgets it, as it forgets reports, which come again within a
second).

Placement groups waiting for room are the third kind: each pending group's unplaced bundles,
with its strategy (`group_demands`), all or none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.hub.bundles import group_of
from actorhub.hub.placement_groups import REMOVED, GroupRecord
from actorhub.hub.records import DEAD, ActorRecord, NodeRecord
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.wire.server import abort

if TYPE_CHECKING:
    from actorhub.hub.actor_table import ActorTable

# A submitter renews its report every second while it has a backlog.
REPORT_TTL_S = 5.0

Shape = tuple[tuple[str, float], ...]  # sorted (name, amount) pairs: hashable, for counting


def shape_key(resources: Mapping[str, float]) -> Shape:
    return tuple(sorted((name, float(amount)) for name, amount in resources.items() if amount > 0))


def shape_messages(counts: Mapping[Shape, int]) -> list[hub_pb2.AutoscalerShape]:
    return [hub_pb2.AutoscalerShape(resources=dict(shape), count=count) for shape, count in counts.items() if count]


def _counted(shapes: Iterable[hub_pb2.AutoscalerShape]) -> Counter[Shape]:
    counts: Counter[Shape] = Counter()
    for shape in shapes:
        counts[shape_key(shape.resources)] += shape.count
    return counts


class DemandBoard:
    """Reported task backlogs and the standing resource request. Used on the hub's loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._reports: dict[str, tuple[Counter[Shape], float]] = {}
        self._requested: Counter[Shape] = Counter()

    def report(self, reporter: str, shapes: Iterable[hub_pb2.AutoscalerShape]) -> None:
        counts = _counted(shapes)
        if counts:
            self._reports[reporter] = (counts, self._clock())
        else:
            self._reports.pop(reporter, None)

    def request(self, bundles: Iterable[hub_pb2.AutoscalerShape]) -> None:
        self._requested = _counted(bundles)

    def task_demand(self) -> Counter[Shape]:
        """The sum of the reports still fresh; lapsed ones are dropped."""
        now = self._clock()
        total: Counter[Shape] = Counter()
        for reporter, (counts, at) in list(self._reports.items()):
            if now - at > REPORT_TTL_S:
                del self._reports[reporter]
            else:
                total.update(counts)
        return total

    @property
    def requested(self) -> Counter[Shape]:
        return self._requested


def node_loads(nodes: Iterable[NodeRecord], actors: Iterable[ActorRecord]) -> list[hub_pb2.AutoscalerNode]:
    """Under the table's lock: each alive node's vectors (CPU included by name) and user actors."""
    users: Counter[str] = Counter(
        r.reserved_on for r in actors if r.reserved_on and r.spec.namespace != SYSTEM_NAMESPACE)
    return [
        hub_pb2.AutoscalerNode(
            node_id=n.node_id, address=n.address,
            total={**n.resources, "CPU": n.num_cpus},
            available={**n.available, "CPU": n.available_cpus - n.lent_cpus},
            actors=users[n.node_id], lent_cpus=n.lent_cpus,
        )
        for n in nodes if n.alive
    ]


def actor_demands(pending: Iterable[ActorRecord]) -> Counter[Shape]:
    """Under the table's lock: what the pending actors would take to be placed. Left out: those
    pinned to a node (no new node can take them), actorhub's own (desks and executors are pinned,
    and follow their node), and those of a placement group (its bundles are the demand)."""
    counts: Counter[Shape] = Counter()
    for rec in pending:
        spec = rec.spec
        if rec.state == DEAD or rec.placing or spec.node_id or spec.namespace == SYSTEM_NAMESPACE:
            continue
        if group_of(spec.resources) is not None:
            continue
        counts[shape_key({**spec.resources, "CPU": max(spec.num_cpus, spec.placement_cpus)})] += 1
    return counts


def group_demands(groups: Iterable[GroupRecord]) -> list[hub_pb2.AutoscalerGroupDemand]:
    """Under the table's lock: the bundles the pending groups still need a node for."""
    return [
        hub_pb2.AutoscalerGroupDemand(
            bundles=[hub_pb2.AutoscalerShape(resources=g.bundle(i), count=1) for i in g.unplaced()],
            strategy=g.spec.strategy or "PACK")
        for g in groups if g.state != REMOVED and g.unplaced()
    ]


def state_message(
    nodes: Sequence[hub_pb2.AutoscalerNode], actors: Counter[Shape], board: DemandBoard,
    groups: Sequence[hub_pb2.AutoscalerGroupDemand] = (),
) -> hub_pb2.AutoscalerState:
    return hub_pb2.AutoscalerState(
        nodes=nodes, task_demand=shape_messages(board.task_demand()), actor_demand=shape_messages(actors),
        requested=shape_messages(board.requested), placement_groups=groups,
    )


class AutoscalerRpcs:
    """The Hub service's autoscaler RPCs, mixed into `HubServicer` (which sets `_table` and
    `autoscaler_demand`): each answers from memory on the loop."""

    _table: ActorTable
    autoscaler_demand: DemandBoard

    async def AutoscalerReportDemand(
        self, request: hub_pb2.AutoscalerDemandReport, context: object,
    ) -> common_pb2.Empty:
        self.autoscaler_demand.report(request.reporter, request.shapes)
        return common_pb2.Empty()

    async def AutoscalerRequestResources(
        self, request: hub_pb2.AutoscalerResourceRequest, context: object,
    ) -> common_pb2.Empty:
        self.autoscaler_demand.request(request.bundles)
        return common_pb2.Empty()

    async def AutoscalerGetState(
        self, request: common_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any],
    ) -> hub_pb2.AutoscalerState:
        if self._table.shutting_down:  # nodes launched now would outlive the cluster
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the hub is shutting down")
        nodes, actors, groups = self._table.autoscaler_view()
        return state_message(nodes, actors, self.autoscaler_demand, groups)
