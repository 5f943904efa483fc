"""Which GPUs of each placement-group bundle are held, and by whom: actors and tasks' leases.

A bundle with GPUs holds ids of its node's GPUs (`GroupRecord.gpu_ids`, out of the node's
`GpuSlots`, kept in the store). The actors and tasks placed in the bundle share those ids
as actors share a node's: a whole GPU has one holder, fractions pack onto one GPU. So each
reserved bundle has a `GpuSlots` over its own ids, and both kinds of holders draw on it:
- an actor, when the table places it (and again when its node registers anew: a restarted
  hub rebuilds the slots from the ids each node reports its actors hold);
- a task lease, when its desk's claim names the group's GPUs (`GPU_group_...`); the desk
  then reports what it lends by (group, bundle, GPU id), absolutely, as it reports the node's
  own GPUs (hub/task_loans.py), so a lost or repeated report counts nothing twice.

Pure bookkeeping, no lock: the table calls it under its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from actorhub.hub.resources import GpuSlots

__all__ = ["BundleGpus", "BundleKey", "LoanKey", "bundle_gpu_request"]

# (group id, bundle index); a loan adds the GPU id.
BundleKey = tuple[str, int]
LoanKey = tuple[str, int, int]


def bundle_gpu_request(group_id: str, need: Mapping[str, float]) -> float:
    """How many of the group's GPUs a rewritten request asks for (0 for none)."""
    return need.get(f"GPU_group_{group_id}", 0.0)


@dataclass
class _Bundle:
    ids: list[int]
    slots: GpuSlots


class BundleGpus:
    def __init__(self) -> None:
        self._bundles: dict[BundleKey, _Bundle] = {}
        # Actor id -> (bundle, amount) of the actors holding GPUs of a bundle.
        self._actors: dict[str, tuple[BundleKey, float]] = {}

    # -- bundles ---------------------------------------------------------------------------------
    def reserve(self, key: BundleKey, ids: list[int]) -> None:
        """The bundle holds `ids` on its node (again): every GPU free, until the holders are
        counted again (`hold_actor`, the desk's next report)."""
        if ids:
            self._bundles[key] = _Bundle(list(ids), GpuSlots(len(ids)))
        else:
            self._bundles.pop(key, None)
        for actor_id in [a for a, (k, _) in self._actors.items() if k == key]:
            del self._actors[actor_id]

    def drop(self, key: BundleKey) -> None:
        """The bundle is gone (its group removed, its node dead): nothing comes back to it."""
        self.reserve(key, [])

    def can_assign(self, key: BundleKey, amount: float) -> bool:
        bundle = self._bundles.get(key)
        return bundle is not None and bundle.slots.can_assign(amount)

    def _take(self, key: BundleKey, amount: float) -> list[int] | None:
        bundle = self._bundles.get(key)
        local = bundle.slots.assign(amount) if bundle is not None else None
        return None if local is None or bundle is None else [bundle.ids[k] for k in local]

    def _give(self, key: BundleKey, ids: Iterable[int], amount: float) -> None:
        bundle = self._bundles.get(key)
        if bundle is not None:
            bundle.slots.release([bundle.ids.index(i) for i in ids if i in bundle.ids], amount)

    def _claim(self, key: BundleKey, ids: Iterable[int], amount: float) -> None:
        bundle = self._bundles.get(key)
        if bundle is not None:
            bundle.slots.claim([bundle.ids.index(i) for i in ids if i in bundle.ids], amount)

    def bundle_of(self, group_id: str, candidates: Iterable[int], ids: Iterable[int]) -> int | None:
        """The bundle among `candidates` (indexes of the group's bundles) that holds `ids`."""
        wanted = set(ids)
        for index in candidates:
            bundle = self._bundles.get((group_id, index))
            if bundle is not None and wanted <= set(bundle.ids):
                return index
        return None

    # -- actors ----------------------------------------------------------------------------------
    def assign_actor(self, actor_id: str, key: BundleKey, amount: float) -> list[int] | None:
        """GPU ids of the bundle for an actor placed in it; None when it has not that much free."""
        ids = self._take(key, amount)
        if ids is not None:
            self._actors[actor_id] = (key, amount)
        return ids

    def hold_actor(self, actor_id: str, key: BundleKey, ids: list[int], amount: float) -> None:
        """An actor holds `ids` of the bundle already (its node said so after a restart)."""
        self._claim(key, ids, amount)
        self._actors[actor_id] = (key, amount)

    def release_actor(self, actor_id: str, ids: list[int]) -> bool:
        """The actor's process is gone; False if it held no GPUs of a bundle."""
        held = self._actors.pop(actor_id, None)
        if held is None:
            return False
        self._give(held[0], ids, held[1])
        return True

    # -- tasks' leases ---------------------------------------------------------------------------
    def grant_task(self, key: BundleKey, amount: float) -> list[int] | None:
        return self._take(key, amount)

    def replace_task_loans(self, before: Mapping[LoanKey, float], now: Mapping[LoanKey, float]) -> None:
        """A desk lent `before` and lends `now`: the slots hold exactly `now` for it."""
        for (group_id, index, gpu), amount in before.items():
            self._give((group_id, index), [gpu], amount)
        for (group_id, index, gpu), amount in now.items():
            self._claim((group_id, index), [gpu], amount)
