"""A task running in a placement group that is removed is killed, as in Ray.

Ray's node kills the workers that use a bundle when the bundle is given back (its group
removed). Here the submitter holds the lease, but the node's desk lent it, and knows from its
claim which group it is in: every answer to the desk's reports carries the node's resource
totals, from which a removed group's bundle names are gone. A lease whose group's names left
the node is checked with the hub (names are also missing while a restarted hub does not know the
node yet), and if the group is REMOVED its executor is killed: the task's call fails as its
worker died, and its submitter, which then finds the group gone, fails the task with
`TaskPlacementGroupRemoved` instead of running it again (tasks/submitter.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from actorhub.hub.bundles import group_of

__all__ = ["RemovedGroupLeases"]


class RemovedGroupLeases:
    """On the desk's event loop."""

    def __init__(self) -> None:
        self._checking: set[str] = set()  # groups being asked about
        self._killed: set[str] = set()  # executors killed for their group, until their lease ends

    def check(self, claims: Mapping[str, tuple[dict[str, float], Any, Any]], node_resources: Mapping[str, float]
              ) -> None:
        """After a report: `claims` by executor id, the node's totals as the hub answered."""
        if not node_resources:
            return  # the hub does not know the node now: nothing can be told
        gone: dict[str, list[str]] = {}
        for executor_id, (need, _, _) in claims.items():
            named = group_of(list(need)) if executor_id not in self._killed else None
            if named is not None and f"bundle_group_{named[0]}" not in node_resources:
                gone.setdefault(named[0], []).append(executor_id)
        for group_id, executors in gone.items():
            if group_id not in self._checking:
                self._checking.add(group_id)
                asyncio.get_running_loop().create_task(self._kill_if_removed(group_id, executors))

    @staticmethod
    async def claim_in_removed_group(need: Mapping[str, float], node_resources: Mapping[str, float]) -> str:
        """The group of a refused claim, if its names left the node and the hub says it is
        removed (such a claim could wait forever); "" otherwise."""
        named = group_of(list(need))
        if named is None or not node_resources or f"bundle_group_{named[0]}" in node_resources:
            return ""
        removed = await asyncio.get_running_loop().run_in_executor(None, _is_removed, named[0])
        return named[0] if removed else ""

    def lease_ended(self, executor_id: str) -> None:
        self._killed.discard(executor_id)

    async def _kill_if_removed(self, group_id: str, executors: list[str]) -> None:
        loop = asyncio.get_running_loop()
        try:
            if not await loop.run_in_executor(None, _is_removed, group_id):
                return
            for executor_id in executors:
                if await loop.run_in_executor(None, _kill, executor_id):
                    self._killed.add(executor_id)
        finally:
            self._checking.discard(group_id)


def _is_removed(group_id: str) -> bool:
    from actorhub.runtime.runtime import current

    try:
        return current().hub.get_placement_group(group_id).state == "REMOVED"
    except LookupError:
        return True  # removed long ago: the hub forgot it
    except Exception:
        return False  # the hub cannot tell now: the next report asks again


def _kill(executor_id: str) -> bool:
    from actorhub.runtime.runtime import current

    try:
        # The executor restarts for the lease's next task (max_restarts=-1), as after a crash.
        current().hub.kill_actor(executor_id, no_restart=False)
    except Exception:
        return False  # the hub is away: the next report tries again
    return True
