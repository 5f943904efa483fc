"""Resource vectors: what a node offers and an actor asks for, besides CPUs.

A vector maps a resource name ("GPU", "memory", custom names) to an amount. CPUs keep their
own fields (`num_cpus`, the lease desks' lent CPUs), so the call paths that only ever use CPUs
pay nothing for this. The arithmetic lives here, apart from any one table, so that a bundle of
a placement group can be reserved with the same `fits` / `take` / `give_back`.

The rules for amounts are Ray's: a fraction below 1 may share a unit with other fractions
(two actors of 0.5 GPU on one GPU), an amount above 1 must be whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "EPSILON",
    "RESERVED_NAMES",
    "GpuSlots",
    "check_amount",
    "check_custom",
    "describe",
    "fits",
    "give_back",
    "take",
]

# Float amounts are added and subtracted many times; compare with a little slack.
EPSILON = 1e-9
# Names with their own option (num_cpus=, num_gpus=, memory=): never inside resources={...}.
RESERVED_NAMES = frozenset({"CPU", "GPU", "memory"})


def check_amount(name: str, value: object) -> float:
    """`value` as an amount of `name`, or a ValueError saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {type(value).__name__}")
    amount = float(value)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if amount > 1 and not amount.is_integer():
        raise ValueError(f"{name} above 1 must be a whole number (a fraction shares one unit), got {value!r}")
    return amount


def check_custom(resources: Mapping[Any, object]) -> dict[str, float]:
    """A `resources={...}` dict with every name and amount checked; zero amounts dropped."""
    checked: dict[str, float] = {}
    for name, value in resources.items():
        if not isinstance(name, str) or not name or not name.strip():
            raise ValueError(f"a resource name must be a non-empty string, not {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} has its own option (num_cpus=, num_gpus=, memory=), not resources=")
        amount = check_amount(f"resources[{name!r}]", value)
        if amount > 0:
            checked[name] = amount
    return checked


def fits(need: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(name, 0.0) >= amount - EPSILON for name, amount in need.items())


def take(free: dict[str, float], need: Mapping[str, float]) -> None:
    for name, amount in need.items():
        free[name] = free.get(name, 0.0) - amount


def give_back(free: dict[str, float], need: Mapping[str, float]) -> None:
    for name, amount in need.items():
        free[name] = free.get(name, 0.0) + amount


def describe(num_cpus: float, need: Mapping[str, float]) -> str:
    """A demand as people write it: {CPU: 1, GPU: 0.5, special: 1}."""
    parts = [f"CPU: {num_cpus:g}"] if num_cpus > 0 or not need else []
    parts += [f"{name}: {amount:g}" for name, amount in sorted(need.items())]
    return "{" + ", ".join(parts) + "}"


class GpuSlots:
    """Which of a node's GPUs (ids 0..n-1) are free, and how much of each.

    Fractions pack onto the GPU already most used that still has room, as Ray does, so that
    whole GPUs stay free for whole requests."""

    def __init__(self, count: int) -> None:
        self._free = [1.0] * count

    def can_assign(self, amount: float) -> bool:
        if amount <= 0:
            return True
        if amount < 1:
            return any(free >= amount - EPSILON for free in self._free)
        return sum(1 for free in self._free if free >= 1.0 - EPSILON) >= int(amount)

    def claim(self, ids: list[int], amount: float) -> None:
        """Mark `ids` as taken by `amount` GPUs: an actor that held them before this table knew the node."""
        share = amount if amount < 1 else 1.0
        for i in ids:
            if 0 <= i < len(self._free):
                self._free[i] = max(0.0, self._free[i] - share)

    def assign(self, amount: float) -> list[int] | None:
        """The ids for `amount` GPUs, taken; None when they are not free."""
        if amount <= 0:
            return []
        if amount < 1:
            shared = [i for i, free in enumerate(self._free) if free >= amount - EPSILON]
            if not shared:
                return None
            best = min(shared, key=lambda i: (self._free[i], i))
            self._free[best] -= amount
            return [best]
        whole = [i for i, free in enumerate(self._free) if free >= 1.0 - EPSILON][: int(amount)]
        if len(whole) < int(amount):
            return None
        for i in whole:
            self._free[i] = 0.0
        return whole

    def release(self, ids: list[int], amount: float) -> None:
        share = amount if amount < 1 else 1.0
        for i in ids:
            if 0 <= i < len(self._free):
                self._free[i] = min(1.0, self._free[i] + share)
