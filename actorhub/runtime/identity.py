"""Identity: who a process's runtime is in its cluster, fixed for the runtime's whole life."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A value, not state: a Runtime gets it at construction and it never changes.

    A driver knows it once the hub has registered its job (see api/cluster.py); a worker once
    StartActor names its actor (see worker/service.py), which is when its runtime is built.
    A restarted actor is a new process, so a new incarnation is a new runtime too.
    """

    job_id: str
    namespace: str
    node_id: str
    # The node agent's address (its object store); "" when this host has no node.
    node_address: str = ""
    # Set in workers only: a driver hosts no actor.
    worker_id: str = ""
    actor_id: str = ""
    incarnation: int = 0
    # An actor's worker: the node's GPUs it holds (CUDA_VISIBLE_DEVICES), and everything it
    # holds by name ("CPU", "GPU", "memory", custom), as its spec asked.
    gpu_ids: tuple[int, ...] = ()
    assigned: tuple[tuple[str, float], ...] = ()
