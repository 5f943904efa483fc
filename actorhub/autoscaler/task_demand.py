"""A submitter's task backlog, reported to the hub for the autoscaler.

Only the submitting process knows how many of its tasks wait for a lease: it asks desks for at
most as many leases as the cluster could lend at once, so a desk never sees the rest, and a task
no node could fit asks no desk at all. So the submitter's idle-lease thread calls `tick` (every
25 ms, a clock read), and once a second, while tasks wait, this sends their shapes to the hub
(`Hub.AutoscalerReportDemand`), replacing the process's last report; one empty report follows
the last backlog. Nothing is sent per task, and a process whose tasks never wait sends nothing.
Tasks pinned to one node (hard node affinity) are left out: no new node can run them; so are
tasks in a placement group, whose bundles are the demand.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from actorhub.exceptions import RpcFailedError
from actorhub.hub.bundles import group_of
from actorhub.wire.autoscaler import AutoscalerHubClient, Demand

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0

# A lease pool as the submitter keys it: (placement, CPUs, runtime_env, other resources).
PoolKey = tuple[Any, ...]


def backlog_demands(ready: Mapping[PoolKey, int], pinned: Callable[[str], str]) -> list[Demand]:
    """The shapes of the tasks waiting in `ready` (tasks per pool); `pinned(placement)` names the
    node a pool is pinned to, "" if none."""
    counts: Counter[tuple[tuple[str, float], ...]] = Counter()
    for pool, waiting in ready.items():
        if waiting <= 0 or pinned(pool[0]):
            continue
        others = tuple(pool[3]) if len(pool) > 3 else ()
        if group_of([name for name, _ in others]) is not None:
            continue  # a placement group's task: the group's bundles are the demand
        shape = tuple(sorted({"CPU": float(pool[1]), **dict(others)}.items()))
        counts[tuple((name, amount) for name, amount in shape if amount > 0)] += waiting
    return [Demand(dict(shape), count) for shape, count in counts.items()]


class TaskDemandReporter:
    """Used by one thread (the submitter's idle-lease thread)."""

    def __init__(
        self, client: AutoscalerHubClient, reporter: str, backlog: Callable[[], list[Demand]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._reporter = reporter
        self._backlog = backlog
        self._clock = clock
        self._next = 0.0
        self._reported = False  # the hub holds a non-empty report of ours

    def tick(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + REPORT_EVERY_S
        demands = self._backlog()
        if not demands and not self._reported:
            return
        try:
            self._client.report_demand(self._reporter, demands)
        except RpcFailedError as e:  # the hub is away: the next round tells it
            log.debug("task demand not reported: %s", e)
            return
        self._reported = bool(demands)
