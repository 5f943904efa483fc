"""The autoscaler's loop: every second, read the hub, decide (`planner.py`), act (the provider).

One round: the hub's view (alive nodes with their load, and the demands that wait:
`Hub.AutoscalerGetState`), the provider's nodes and their types, a look into the store of each
node that is otherwise idle (objects of its own keep it: Ray drains a node only once it holds no
primary copies), then the plan: nodes to launch, nodes to stop. Nodes this autoscaler stopped are
left out of the hub's view until the hub drops them, so their free resources are not counted.

Demands no node type could ever hold are logged once each (and again if they go and come
back), never launched for. Each round also writes `autoscaler-status.json` in the session: the
nodes by type, those starting and stopping, and the infeasible and waiting demands, which
`actorhub status` prints.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from actorhub.autoscaler.config import ClusterConfig
from actorhub.autoscaler.planner import Plan, Planner, WorkerNode, is_idle
from actorhub.autoscaler.provider import NodeProvider
from actorhub.exceptions import RpcFailedError
from actorhub.wire.autoscaler import AutoscalerHubClient, AutoscalerView, NodeLoad

log = logging.getLogger("actorhub.autoscaler")

UPDATE_EVERY_S = 1.0
STATUS_FILE = "autoscaler-status.json"
PID_ROLE = "autoscaler"  # its pid file in the session: autoscaler.pid


def describe(shape: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {amount:g}" for name, amount in sorted(shape.items())) + "}"


class Autoscaler:
    def __init__(
        self, config: ClusterConfig, provider: NodeProvider, hub: AutoscalerHubClient,
        holds_objects: Callable[[NodeLoad], bool], status_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`holds_objects(node)`: whether the node's store has objects of its own (on any error:
        True, so that a node is never stopped on a guess)."""
        self.config = config
        self._provider = provider
        self._hub = hub
        self._holds_objects = holds_objects
        self._status_path = status_path
        self._clock = clock
        self._planner = Planner(config, clock)
        self._seen_at: dict[str, float] = {}  # by node: its launch, or when the hub last listed it
        self._stopping: set[str] = set()
        self._warned: set[tuple[tuple[str, float], ...]] = set()

    def update(self) -> Plan:
        view = self._hub.state()
        now = self._clock()
        alive = {n.node_id: n for n in view.nodes}
        workers = []
        for node_id in self._provider.non_terminated_nodes():
            load = alive.get(node_id)
            holds = load is not None and is_idle(load) and self._holds_objects(load)
            if load is not None:
                self._seen_at[node_id] = now  # so a hub restart, which hides it a while, does not stop it
            seen = self._seen_at.setdefault(node_id, now)
            workers.append(WorkerNode(node_id, self._provider.node_type_of(node_id), load, seen, holds))
        self._stopping &= set(alive)  # the hub dropped the others
        plan = self._planner.plan(view, workers, ignore=self._stopping)
        for node_type, count in sorted(plan.launch.items()):
            for _ in range(count):
                node_id = self._provider.create_node(node_type)
                self._seen_at[node_id] = now
                log.info("launched node %s of type %s (%s)", node_id, node_type, _demand_words(view))
        for node_id, why in plan.terminate:
            self._provider.terminate_node(node_id)
            self._seen_at.pop(node_id, None)
            self._stopping.add(node_id)
            log.info("stopping node %s: %s", node_id, why)
        self._warn_infeasible(plan)
        self._write_status(view, workers, plan)
        return plan

    def _warn_infeasible(self, plan: Plan) -> None:
        current = {tuple(sorted(shape.items())) for shape in plan.infeasible}
        for shape in plan.infeasible:
            key = tuple(sorted(shape.items()))
            if key not in self._warned:
                types = ", ".join(f"{name} {describe(t.vector())}" for name, t in self.config.worker_types().items())
                log.warning("infeasible demand %s: no node type can hold it (types: %s); no node is launched for it",
                            describe(shape), types)
        self._warned = current

    def _write_status(self, view: AutoscalerView, workers: list[WorkerNode], plan: Plan) -> None:
        if self._status_path is None:
            return
        status = {
            "cluster_name": self.config.cluster_name,
            "updated_at": time.time(),
            "nodes": {w.node_id: w.node_type for w in workers},
            "starting": sorted(w.node_id for w in workers if w.load is None),
            "stopping": sorted(self._stopping),
            "infeasible": plan.infeasible,
            "waiting": plan.waiting,
            "demand": {
                "tasks": [[dict(d.resources), d.count] for d in view.task_demand],
                "actors": [[dict(d.resources), d.count] for d in view.actor_demand],
                "requested": [[dict(d.resources), d.count] for d in view.requested],
            },
        }
        temporary = self._status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status, indent=1))
        temporary.replace(self._status_path)

    def run(self, stop: threading.Event, hub_gone: Callable[[], bool]) -> None:
        """Update every second until `stop` is set or the hub is gone for good (the cluster was
        stopped). A round that fails is logged; the next one starts afresh."""
        while not stop.is_set():
            try:
                self.update()
            except RpcFailedError as e:
                if hub_gone():
                    log.info("the hub is gone: the autoscaler stops")
                    return
                log.warning("autoscaler round skipped: %s", e)
            except Exception:
                log.exception("autoscaler round failed")
            stop.wait(UPDATE_EVERY_S)


def _demand_words(view: AutoscalerView) -> str:
    parts = []
    for what, demands in (("tasks", view.task_demand), ("actors", view.actor_demand),
                          ("requested", view.requested)):
        if demands:
            parts.append(f"{what} " + ", ".join(f"{d.count} x {describe(dict(d.resources))}" for d in demands))
    if view.placement_groups:
        parts.append(f"{len(view.placement_groups)} placement groups")
    return "; ".join(parts) or "min_workers"
