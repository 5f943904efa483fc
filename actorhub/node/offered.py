"""What a node offers besides CPUs: the vector it registers with the hub (hub/resources.py).

GPUs are declared (`--num-gpus`), not detected: the node reports ids 0..n-1 and the hub hands
them out, so a cluster without GPU hardware can run and test GPU placement. The "memory"
resource defaults as Ray's does: the memory the machine has available, less what the object
store may take, since the store's shared memory is not heap that tasks and actors can use.
"""

from __future__ import annotations

import os
from pathlib import Path

from actorhub.config import Config

_MEMINFO = Path("/proc/meminfo")
HEAD_RESOURCE = "node:__internal_head__"
_STORE_SHARE = 0.3  # the object store's default share of the machine's memory (object_store/service.py)


def offered_resources(config: Config) -> dict[str, float]:
    """"GPU", "memory" and the custom resources this node offers."""
    offered = dict(config.resources)
    if config.num_gpus:
        offered["GPU"] = float(config.num_gpus)
    memory = config.memory if config.memory is not None else _default_memory(config.object_store_memory)
    if memory > 0:
        offered["memory"] = float(memory)
    return offered


def node_resources(address: str, head: bool) -> dict[str, float]:
    """Ray's resources that name a node: node:<ip> = 1 on each, node:__internal_head__ = 1 on
    the head's, so that work can ask to run there (a small amount, e.g. 0.01, as Ray's users do)."""
    named = {f"node:{address.rpartition(':')[0]}": 1.0}
    if head:
        named[HEAD_RESOURCE] = 1.0
    return named


def _default_memory(object_store_memory: int | None) -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    store = object_store_memory if object_store_memory is not None else int(physical * _STORE_SHARE)
    return max(0, _available_memory(physical) - store)


def _available_memory(physical: int) -> int:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical
