"""`actorhub.util.drain_node`: `actorhub drain` from Python (the design is in hub/node_drain.py)."""

from __future__ import annotations

import math

from actorhub.exceptions import OptionsError
from actorhub.wire.node_drain import DrainSummary


def drain_node(node_id: str, deadline_s: float | None = None) -> DrainSummary:
    """Drain the node `node_id` and return once it is removed: nothing new is placed there, calls
    under way end, restartable actors move to other nodes with their queued calls (and their
    checkpoints), the calls of actors that cannot move fail with ActorUnavailableError, and what
    still runs after `deadline_s` (default 30) ends as on a node's death. A node that is not
    alive raises NodeNotFoundError."""
    if not isinstance(node_id, str) or not node_id:
        raise OptionsError(f"drain_node: node_id must be a node's id (a non-empty str), not {node_id!r}")
    if deadline_s is not None and (
        isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float)
        or not math.isfinite(deadline_s) or deadline_s <= 0
    ):
        raise OptionsError(f"drain_node: deadline_s must be a positive number of seconds, not {deadline_s!r}")
    from actorhub.api.cluster import connected_runtime

    return connected_runtime().hub.drain_node(node_id, float(deadline_s or 0.0))
