"""Ray's `ray.autoscaler.sdk`: ask the autoscaler for capacity ahead of the work that needs it.

`request_resources(num_cpus=4)` makes the cluster hold at least 4 CPUs in all (one-CPU bundles),
used or not; `bundles=[{"GPU": 1}, ...]` asks for room for each bundle, on top. Each call
replaces the previous request, and `request_resources(num_cpus=0)` (or no argument) withdraws
it, after which nodes it kept go once idle. The request lives in the hub's memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from actorhub.exceptions import OptionsError
from actorhub.wire.autoscaler import AutoscalerHubClient, Demand

__all__ = ["request_resources"]


def request_resources(num_cpus: int | None = None, bundles: Sequence[Mapping[str, float]] | None = None) -> None:
    demands = _bundles(num_cpus, bundles)
    from actorhub.api.cluster import connected_runtime  # the public facade, loaded once used

    runtime = connected_runtime()
    AutoscalerHubClient(runtime.channels, runtime.hub.address, runtime.deadlines).request_resources(demands)


def _bundles(num_cpus: object, bundles: object) -> list[Demand]:
    demands: list[Demand] = []
    if num_cpus is not None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 0:
            raise OptionsError(f"request_resources(num_cpus=) must be an int >= 0, got {num_cpus!r}")
        if num_cpus:
            demands.append(Demand({"CPU": 1.0}, num_cpus))
    if bundles is not None:
        if not isinstance(bundles, (list, tuple)):
            raise OptionsError(f"request_resources(bundles=) must be a list of dicts, got {type(bundles).__name__}")
        for index, bundle in enumerate(bundles):
            demands.append(Demand(_bundle(index, bundle)))
    return demands


def _bundle(index: int, bundle: object) -> dict[str, float]:
    where = f"request_resources(bundles=): bundle {index}"
    if not isinstance(bundle, Mapping):
        raise OptionsError(f"{where} must be a dict of resource names to amounts, got {type(bundle).__name__}")
    checked: dict[str, float] = {}
    for name, amount in bundle.items():
        if not isinstance(name, str) or not name:
            raise OptionsError(f"{where} has a resource name that is not a non-empty string: {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise OptionsError(f"{where}: {name} must be a finite number >= 0, got {amount!r}")
        if amount:
            checked[name] = float(amount)
    if not checked:
        raise OptionsError(f"{where} asks for nothing")
    return checked
