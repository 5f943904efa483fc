"""A task running in a placement group with placement_group_capture_child_tasks=True runs the
tasks and actors it creates in its group too (Ray's rule), and get_current_placement_group()
answers inside it; without capture they run outside the group."""

from __future__ import annotations

from typing import Any

import actorhub
from actorhub.util import get_current_placement_group, placement_group, remove_placement_group
from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def _group() -> str | None:
    group = get_current_placement_group()
    return group.id.hex() if group is not None else None


@actorhub.remote
def child() -> str | None:
    return _group()


@actorhub.remote
class ChildActor:
    def group(self) -> str | None:
        return _group()


@actorhub.remote
def parent() -> dict[str, Any]:
    actor = ChildActor.options(num_cpus=0).remote()
    return {"own": _group(), "task": actorhub.get(child.options(num_cpus=0).remote()),
            "actor": actorhub.get(actor.group.remote())}


def test_a_task_in_a_group_captures_its_children_only_when_asked(shared_cluster: actorhub.ClusterContext) -> None:
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(30)
    group = pg.id.hex()
    try:
        captured = parent.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_capture_child_tasks=True)).remote()
        assert actorhub.get(captured, timeout=60) == {"own": group, "task": group, "actor": group}
        loose = parent.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
        assert actorhub.get(loose, timeout=60) == {"own": group, "task": None, "actor": None}
        assert _group() is None  # the driver runs in no group
    finally:
        remove_placement_group(pg)
