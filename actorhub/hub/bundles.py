"""Placement group bundles: how they are checked, and the resource names they add to a node.

Pure (no actorhub imports besides `resources`): the caller checks bundles and rewrites a
request into bundle names with it, the hub reserves with the same names.

Ray's naming: reserving bundle i of group G on a node adds, for each resource R of the bundle,
`R_group_<i>_<G>` (that bundle) and `R_group_<G>` (any bundle of G) with the bundle's amount,
plus `bundle_group_<i>_<G>` and `bundle_group_<G>` with 1000 units each, so that a request
for no resources at all still has a name that only the group's nodes offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from actorhub.hub.resources import check_amount

__all__ = [
    "BUNDLE_UNITS",
    "MARKER_AMOUNT",
    "STRATEGIES",
    "bundle_resources",
    "check_bundles",
    "group_of",
    "group_request",
]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# The units of `bundle_group_*` a bundle offers, and what one request takes of them (Ray's).
BUNDLE_UNITS = 1000.0
MARKER_AMOUNT = 0.001


def check_bundles(bundles: object) -> list[dict[str, float]]:
    """`bundles` as a list of {resource: amount}, or a ValueError naming what is wrong."""
    if not isinstance(bundles, (list, tuple)):
        raise ValueError(f"bundles must be a list of dicts, not {type(bundles).__name__}")
    if not bundles:
        raise ValueError("bundles must not be empty: a placement group reserves at least one bundle")
    checked: list[dict[str, float]] = []
    for index, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping):
            raise ValueError(f"bundle {index} must be a dict of resource amounts, not {type(bundle).__name__}")
        amounts: dict[str, float] = {}
        for name, value in bundle.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"bundle {index}: a resource name must be a non-empty string, not {name!r}")
            if "_group_" in name:
                raise ValueError(f"bundle {index}: {name!r} is a placement group's own resource name")
            what = f"bundle {index} {name!r}"
            # CPUs, as num_cpus=, may be any fraction; other amounts above 1 are whole (Ray's rule).
            amount = check_amount(what, value) if name != "CPU" else _cpus(what, value)
            if amount > 0:
                amounts[name] = amount
        if not amounts:
            raise ValueError(f"bundle {index} ({dict(bundle)!r}) asks for no resources: every bundle needs "
                             "an amount above 0 of at least one resource")
        checked.append(amounts)
    return checked


def _cpus(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def bundle_resources(group_id: str, index: int, bundle: Mapping[str, float]) -> dict[str, float]:
    """The names bundle `index` of `group_id` adds to the node it is reserved on."""
    names: dict[str, float] = {}
    for name, amount in bundle.items():
        names[f"{name}_group_{index}_{group_id}"] = amount
        names[f"{name}_group_{group_id}"] = amount
    names[f"bundle_group_{index}_{group_id}"] = BUNDLE_UNITS
    names[f"bundle_group_{group_id}"] = BUNDLE_UNITS
    return names


def group_request(group_id: str, index: int, cpus: float, others: Mapping[str, float]) -> dict[str, float]:
    """A request of `cpus` CPUs and `others` rewritten into the group's names: any bundle of the
    group (the `R_group_G` names, always, as Ray does, so a bundle's use counts against the
    group's total there), and bundle `index`'s own names when it is >= 0. A marker amount lands
    a request for nothing in the group."""
    amounts = {name: amount for name, amount in others.items() if amount > 0}
    if cpus > 0:
        amounts["CPU"] = cpus
    amounts["bundle"] = MARKER_AMOUNT
    suffixes = [group_id] + ([f"{index}_{group_id}"] if index >= 0 else [])
    return {f"{name}_group_{suffix}": amount for suffix in suffixes for name, amount in amounts.items()}


def group_of(names: Sequence[str] | Mapping[str, Any]) -> tuple[str, int] | None:
    """(group id, bundle index or -1) that a rewritten request names, or None."""
    best: tuple[str, int] | None = None
    for name in names:
        if not name.startswith("bundle_group_"):
            continue
        rest = name.removeprefix("bundle_group_")
        head, _, tail = rest.partition("_")
        if tail and head.isdigit():
            return tail, int(head)
        best = (rest, -1)
    return best
