"""A worker's metrics: its plain counts (`metrics/counts.py`) published once a second.

The publisher thread starts when the process becomes an actor (worker/service.py). It writes
into prometheus_client's multiprocess files in the node's directory (`metrics/node_dir.py`),
which the node's endpoint aggregates (`metrics/node_exporter.py`). Counters keep the counts of
workers that ended; the gauges ("livesum") count only live processes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from prometheus_client import Counter, Gauge

from actorhub.metrics.counts import CALLS, TASKS

log = logging.getLogger(__name__)
PERIOD_S = 1.0

_ACTOR_LABELS = ("Name", "ActorId", "NodeId")
ACTOR_CALLS = Counter(
    "actorhub_actor_calls", "Actor calls by state: SUBMITTED (reached the actor's mailbox), FINISHED, FAILED.",
    ("State", *_ACTOR_LABELS))
ACTOR_CALLS_RUNNING = Gauge("actorhub_actor_calls_running", "Actor calls running now.", _ACTOR_LABELS,
                            multiprocess_mode="livesum")
ACTOR_QUEUE_DEPTH = Gauge("actorhub_actor_queue_depth", "Calls waiting in an actor's mailbox.", _ACTOR_LABELS,
                          multiprocess_mode="livesum")
TASKS_COUNTED = Counter("actorhub_tasks", "Tasks by state: SUBMITTED (reached an executor), FINISHED, FAILED.",
                        ("State", "Name", "NodeId"))
TASKS_RUNNING = Gauge("actorhub_tasks_running", "Tasks running now.", ("Name", "NodeId"),
                      multiprocess_mode="livesum")
LEASE_DESK = Gauge("actorhub_lease_desk_cpus", "A node's lease desk: CPUs in all (total), lent to tasks (lent).",
                   ("Kind", "NodeId"), multiprocess_mode="livesum")
LEASE_DESK_QUEUED = Gauge("actorhub_lease_desk_queued_requests", "Lease requests waiting at a node's desk.",
                          ("NodeId",), multiprocess_mode="livesum")

_started = threading.Lock()
_desk_stats: list[Callable[[], Mapping[str, float]]] = []


def watch_lease_desk(stats: Callable[[], Mapping[str, float]]) -> None:
    """A lease desk lives here: publish its `stats` (total, lent, queued) too."""
    _desk_stats.append(stats)


def start(class_name: str, actor_id: str, node_id: str) -> None:
    """Publish this process's counts from now on (once per process)."""
    if not _started.acquire(blocking=False):
        return
    publisher = _Publisher(class_name, actor_id, node_id)
    threading.Thread(target=publisher.run, name="actorhub-metrics", daemon=True).start()


class _Publisher:
    def __init__(self, class_name: str, actor_id: str, node_id: str) -> None:
        self._node_id = node_id
        labels = (class_name, actor_id, node_id)
        self._submitted = ACTOR_CALLS.labels("SUBMITTED", *labels)
        self._finished = ACTOR_CALLS.labels("FINISHED", *labels)
        self._failed = ACTOR_CALLS.labels("FAILED", *labels)
        self._running = ACTOR_CALLS_RUNNING.labels(*labels)
        self._queued = ACTOR_QUEUE_DEPTH.labels(*labels)
        self._calls = (0, 0, 0, 0)
        self._tasks: dict[tuple[str, str], int] = {}

    def run(self) -> None:
        stop = threading.Event()
        while not stop.wait(PERIOD_S):
            try:
                self.publish()
            except Exception:  # metrics must never take the worker down; say why once a period
                log.exception("publishing this worker's metrics failed")

    def publish(self) -> None:
        calls = (CALLS.received, CALLS.started, CALLS.ended, CALLS.failed)
        if calls != self._calls:
            received, started, ended, failed = calls
            last = self._calls
            self._calls = calls
            _add(self._submitted, received - last[0])
            _add(self._failed, failed - last[3])
            _add(self._finished, (ended - failed) - (last[2] - last[3]))
            self._running.set(started - ended)
            self._queued.set(max(0, received - started))
        if TASKS.started:
            self._publish_tasks()
        for stats in _desk_stats:
            desk = stats()
            LEASE_DESK.labels("total", self._node_id).set(desk.get("total", 0.0))
            LEASE_DESK.labels("lent", self._node_id).set(desk.get("total", 0.0) - desk.get("free", 0.0))
            LEASE_DESK_QUEUED.labels(self._node_id).set(desk.get("waiting", 0.0))

    def _publish_tasks(self) -> None:
        for state, counts in (("SUBMITTED", TASKS.started), ("FINISHED", TASKS.finished), ("FAILED", TASKS.failed)):
            for name, count in list(counts.items()):
                last = self._tasks.get((state, name), 0)
                if count != last:
                    self._tasks[(state, name)] = count
                    TASKS_COUNTED.labels(state, name, self._node_id).inc(count - last)
        for name, started in list(TASKS.started.items()):
            ended = TASKS.finished.get(name, 0) + TASKS.failed.get(name, 0)
            TASKS_RUNNING.labels(name, self._node_id).set(started - ended)


def _add(counter: Counter, amount: int) -> None:
    if amount > 0:
        counter.inc(amount)
