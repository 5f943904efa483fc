"""Which node's desk a task's lease is asked from: Ray's scheduling strategies, submitter side.

Pure functions over the submitter's view of the cluster (`submit_state.SubmitState`): each
node's CPUs, the CPUs actors hold there (from the hub, refreshed every 2 s) and the leases this
submitter holds or asked for. A node's room is what is left of its CPUs; its utilization the
share in use.

A lease pool's first element says where its tasks may run (`placement_of`):
- "" ("DEFAULT"): the node whose store holds most of the task's argument bytes (`locality`)
  while it has room, whatever its load (Ray's locality-aware leasing comes first); else Ray's hybrid
  policy with k = 1 (`hybrid`): the caller's node while it has room and its score is the lowest,
  a node's score being its utilization, or 0 below half used (Ray's
  scheduler_spread_threshold); else the node with room and the lowest score, then the lowest
  utilization, in node order. With no room anywhere, the caller's desk queues it.
- "SPREAD": round-robin over the nodes with room, else over the nodes that fit.
- a node id: a hard NodeAffinitySchedulingStrategy: that node's desk only, which queues it
  while busy.
- "soft:<node>": a soft one whose node is alive and could fit the task: the same, but tasks
  whose lease that desk refuses (the node died since the view was taken) go back as DEFAULT.
- "spill:<node>": soft with `_spill_on_unavailable`: that node while it has room, else DEFAULT.
- "now:<node>": hard with `_fail_on_unavailable`: that node if it has room now, else the task
  fails (TaskUnschedulableError).
A soft affinity to a node that is gone or could never fit the task is "" (DEFAULT).
Data locality counts only for DEFAULT tasks, as in Ray.

Argument bytes, as Ray's locality-aware leasing weighs them: the owner's object table records
where a stored argument is (a put's, or a result stored on the caller's node: that node;
`<id>@<address>`: the node at that address) and its bytes there, told at no extra cost by the
put that wrote it or by the executor in the call's reply. A stored argument whose size this
process does not know (a borrowed one) counts as the store threshold (100 KiB), the least a
stored object has; inline arguments do not count. Ties go to the caller's node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from actorhub.hub.resources import EPSILON
from actorhub.object_store.client import INLINE_LIMIT
from actorhub.runtime.ids import split_store_id
from actorhub.tasks.options import TaskOptions

__all__ = [
    "SPREAD_POOL",
    "SPREAD_THRESHOLD",
    "fails_when_busy",
    "falls_back",
    "hybrid",
    "locality",
    "may_move",
    "pinned_node",
    "placement_of",
    "preferred_node",
    "round_robin",
]

SPREAD_POOL = "SPREAD"
_SOFT = "soft:"
_SPILL = "spill:"
_NOW = "now:"
# Ray's scheduler_spread_threshold: a node used below this share counts as unloaded.
SPREAD_THRESHOLD = 0.5


def placement_of(options: TaskOptions, alive: Mapping[str, float], could_fit: Callable[[str], bool]) -> str:
    """The first element of a task's lease pool: where it may run (see the module's text)."""
    affinity = options.affinity
    if affinity is None:
        return SPREAD_POOL if options.spread else ""
    node = affinity.node_id
    if not affinity.soft:
        return _NOW + node if affinity._fail_on_unavailable else node
    if node in alive and alive[node] >= options.num_cpus - EPSILON and could_fit(node):
        return (_SPILL if affinity._spill_on_unavailable else _SOFT) + node
    return ""


def pinned_node(placement: str) -> str:
    """The node whose desk alone may lend to the pool; "" when its tasks may go elsewhere."""
    if placement.startswith(_NOW):
        return placement[len(_NOW):]
    if placement.startswith(_SOFT):
        return placement[len(_SOFT):]
    if placement == SPREAD_POOL or placement.startswith(_SPILL):
        return ""
    return placement


def preferred_node(placement: str) -> str:
    """The node a soft affinity with spill prefers; "" for other pools."""
    return placement[len(_SPILL):] if placement.startswith(_SPILL) else ""


def fails_when_busy(placement: str) -> bool:
    return placement.startswith(_NOW)


def falls_back(placement: str) -> bool:
    """Whether the pool's tasks run as DEFAULT when their node's desk cannot lend (soft)."""
    return placement.startswith(_SOFT)


def may_move(placement: str) -> bool:
    """Whether the pool's tasks would rather run on a preferred node than on any idle lease."""
    return placement == "" or placement.startswith(_SPILL)


def locality(recorded: Iterable[tuple[str, int]], local_node: str, node_of_address: Mapping[str, str]) -> str:
    """The node whose store holds most bytes of the arguments recorded so: (object table store
    id, bytes there or 0 when not known) each."""
    held: Counter[str] = Counter()
    for store_id, size in recorded:
        _, address = split_store_id(store_id)
        node = node_of_address.get(address, "") if address else local_node
        if node:
            held[node] += size or INLINE_LIMIT
    if not held:
        return ""
    return max(held, key=lambda n: (held[n], n == local_node))


def hybrid(fits: list[str], room: Mapping[str, float], sizes: Mapping[str, float], cpus: float,
           home: str, local: str) -> str:
    """Ray's hybrid choice among `fits` (nodes that could run the task), `home` preferred."""
    available = [n for n in fits if room[n] >= cpus - EPSILON]
    if not available:
        if home in fits:
            return home  # its desk queues the request
        return local if local in fits or not fits else fits[0]

    def used(node: str) -> float:
        size = sizes.get(node, 0.0)
        return 1.0 - room[node] / size if size > 0 else 0.0

    def score(node: str) -> float:
        share = used(node)
        return share if share >= SPREAD_THRESHOLD else 0.0

    lowest = min(score(n) for n in available)
    if home in available and score(home) <= lowest + EPSILON:
        return home
    return min(available, key=lambda n: (score(n), used(n)))


def round_robin(fits: list[str], room: Mapping[str, float], cpus: float, order: list[str], after: str) -> str:
    """The next node after `after` (in `order`, the cluster's node order) among those of `fits`
    with room, else among `fits`."""
    available = [n for n in fits if room[n] >= cpus - EPSILON] or fits
    if not available:
        return ""
    start = order.index(after) + 1 if after in order else 0
    rank = {node: (i - start) % len(order) for i, node in enumerate(order)}
    return min(available, key=lambda n: rank.get(n, len(order)))
