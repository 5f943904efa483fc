"""Ray's placement group microbenchmark (`ray_perf.py`), run on actorhub: create 100 groups of
one small bundle of a custom resource, wait for each, remove them all; creations and removals
per second. The cluster is started with `resources={"custom": 100}`, as Ray's run is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actorhub.cli.bench_timing import Result, Timing, timeit
from actorhub.util.placement_group import placement_group, remove_placement_group

GROUPS = 100
CUSTOM_RESOURCES = {"custom": 100.0}


def _create_and_remove() -> None:
    groups = [placement_group([{"custom": 0.001}]) for _ in range(GROUPS)]
    for group in groups:
        group.wait(timeout_seconds=30)
    # Removed within the round, as Ray's does: groups left behind would slow every later round.
    for group in groups:
        remove_placement_group(group)


def _placement_groups(timing: Timing, actors: list[Any]) -> Result:
    return timeit("placement group create/removal", _create_and_remove, GROUPS, timing)


GROUP_METRICS: list[tuple[str, Callable[[Timing, list[Any]], Result]]] = [
    ("placement group create/removal per second", _placement_groups),
]
